"""Pytest fixtures for tests that need a real mosquitto (imported by conftest.py, so every test
module can ask for them by name).

``broker`` is a running ``secagg.transport.broker.Mosquitto`` on a free loopback port, with
certificates made in ``tmp_path`` for the clients ``mqtt_client_ids`` names (1..8 unless a
module overrides that fixture). ``broker.files`` holds the paths and TLS contexts:
``broker.files.server_tls_context()``, ``broker.files.client_tls_context(i)``,
``broker.files.client_identity(i)``. ``broker.stop()`` / ``broker.start()`` restart it on the same
port with its persistence; ``broker.kill()`` crashes it. Teardown stops it and checks that no
process is left.

The tests skip, saying why, when the mosquitto binary is absent, except where
``SECAGG_REQUIRE_MOSQUITTO=1`` (CI sets it): there a missing broker fails them.
"""

from __future__ import annotations

import os

import pytest

from secagg.transport.broker import BrokerFiles, Mosquitto, find_mosquitto, free_port, write_broker_config


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    binary = find_mosquitto()
    if binary is None:
        reason = ("mosquitto not installed (Debian: apt-get install -y mosquitto; or set "
                  "$SECAGG_MOSQUITTO to the binary)")
        if os.environ.get("SECAGG_REQUIRE_MOSQUITTO") == "1":
            pytest.fail(f"SECAGG_REQUIRE_MOSQUITTO=1 but {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture
def mqtt_client_ids() -> tuple[int, ...]:
    return tuple(range(1, 9))


@pytest.fixture
def broker_files(tmp_path, mqtt_client_ids) -> BrokerFiles:
    return write_broker_config(tmp_path / "broker", clients=mqtt_client_ids, port=free_port())


@pytest.fixture
def broker(mosquitto_binary, broker_files):
    mosquitto = Mosquitto(broker_files, binary=mosquitto_binary)
    with mosquitto:
        yield mosquitto
    process = mosquitto.process
    assert process is None, f"mosquitto (pid {process.pid}) still running after the test"
