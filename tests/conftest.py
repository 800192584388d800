import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

VECTORS = Path(__file__).resolve().parent.parent / "protocol_spec" / "vectors"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("default")


def load_vectors(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


@pytest.fixture(scope="session", autouse=True)
def _compile_field_once():
    from secagg.crypto import shamir

    shamir.warm_up()

# The mosquitto fixtures (broker, broker_files, mqtt_client_ids, mosquitto_binary) for every module.
from mqtt_fixtures import broker, broker_files, mosquitto_binary, mqtt_client_ids  # noqa: E402,F401
