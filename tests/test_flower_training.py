"""examples/flower_training.py: a real Flower simulation (Ray) of federated training on digits.

secagg's workflow and mod must give the model plain FedAvg gives, round after round: the same
clients, split, initial model and seeded local training, so only quantisation separates them.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")
pytest.importorskip("sklearn")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLIENTS, ROUNDS = 10, 3


@pytest.fixture(scope="module")
def example():
    # Ray's workers import the module the client app's functions come from by name, and take
    # their sys.path from this process: examples/ goes on it for the module's lifetime.
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("flower_training", EXAMPLES / "flower_training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["flower_training"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("flower_training", None)
        sys.path.remove(str(EXAMPLES))


@pytest.fixture(scope="module")
def runs(example):
    settings = example.Settings(clients=CLIENTS, rounds=ROUNDS)
    return settings, example.train(settings, ["fedavg", "secagg"])


def test_every_round_evaluated_with_every_client(runs):
    settings, results = runs
    for r in results.values():
        assert len(r.accuracy) == ROUNDS + 1 and r.failures == [0] * ROUNDS
    assert results["secagg"].contributors == [CLIENTS] * ROUNDS  # each round went through secagg


def test_training_improves_on_the_initial_model(runs):
    _, results = runs
    fedavg = results["fedavg"].accuracy
    assert fedavg[0] < 0.2 and fedavg[-1] > fedavg[0] + 0.5 and fedavg[-1] > 0.75


def test_secagg_trains_the_model_fedavg_trains(example, runs):
    settings, results = runs
    fedavg, secagg = results["fedavg"], results["secagg"]
    # Accuracy per round within one test image of 450; parameters within quantisation error.
    assert np.max(np.abs(np.subtract(secagg.accuracy, fedavg.accuracy))) <= 1 / 450 + 1e-12
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(secagg.final_parameters, fedavg.final_parameters))
    assert diff < 1e-3
    # ... between trained models: the parameters moved far more than that.
    initial = example.initial_parameters(settings.seed)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(fedavg.final_parameters, initial))
    assert moved > 100 * diff and moved > 0.05


def test_the_split_is_non_iid_and_gives_every_client_data(example):
    settings = example.Settings(clients=50)
    federation = example.make_federation(settings)
    sizes = [len(y) for y in federation.y_parts]
    assert min(sizes) >= settings.min_samples and sum(sizes) + len(federation.y_test) == 1797
    assert 0.2 <= len(federation.y_test) / 1797 <= 0.26
    # Non-IID: most clients miss some classes entirely.
    assert np.median([len(np.unique(y)) for y in federation.y_parts]) < 10
    again = example.make_federation(settings)
    assert all(np.array_equal(a, b) for a, b in zip(federation.y_parts, again.y_parts))
