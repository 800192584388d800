"""The Flower adapter, driven in-process through Flower's own message serialisation
(``secagg.flower.inprocess.InProcessGrid``): the legacy workflow and mod, the Message-API
wrapper, dropouts, bad input, DP with a persistent budget, signed models, and the metrics."""

from __future__ import annotations

import logging

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

import flwr.compat.common.recorddict_compat as compat  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.clientapp import ClientApp as MessageClientApp  # noqa: E402
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.server.client_manager import SimpleClientManager  # noqa: E402
from flwr.server.compat.grid_client_proxy import GridClientProxy  # noqa: E402
from flwr.server.compat.legacy_context import LegacyContext  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key  # noqa: E402
from flwr.serverapp.strategy import FedAvg as MessageFedAvg  # noqa: E402
from flwr.serverapp.strategy import FedMedian  # noqa: E402

from secagg.errors import ConfigurationError  # noqa: E402
from secagg.flower import (  # noqa: E402
    DPOptions,
    Layout,
    SecAggStrategy,
    SecAggWorkflow,
    make_secagg_mod,
    secagg_mod,
)
from secagg.flower.inprocess import InProcessGrid  # noqa: E402
from secagg.flower.layout import RECORD, STATE, error_from_reason, tagged  # noqa: E402

logging.getLogger("flwr").setLevel(logging.ERROR)

SHAPES = [(3, 4), (5,), (2, 2, 2)]
DTYPES = [np.float32, np.float64, np.float32]


def node_ids(n: int) -> list[int]:
    return [(2**62 + 7919 * i) for i in range(n)]  # 64-bit Flower ids, not 1..n


def updates(nodes, seed=0, shapes=SHAPES, dtypes=DTYPES):
    gen = np.random.default_rng(seed)
    arrays = {nid: [gen.uniform(-1, 1, s).astype(d) for s, d in zip(shapes, dtypes)] for nid in nodes}
    weights = {nid: int(gen.integers(1, 60)) for nid in nodes}
    return arrays, weights


def weighted_mean(arrays, weights, among):
    total = sum(weights[n] for n in among)
    return [sum(weights[n] * arrays[n][i].astype(np.float64) for n in among) / total for i in range(len(SHAPES))]


class Fit(NumPyClient):
    def __init__(self, nid, arrays, weights, bad=None):
        self.nid, self.arrays, self.weights, self.bad = nid, arrays, weights, bad or {}

    def fit(self, parameters, config):
        fault = self.bad.get(self.nid)
        arrays = [a.copy() for a in self.arrays[self.nid]]
        weight = self.weights[self.nid]
        if fault == "nan":
            arrays[1][2] = np.nan
        elif fault == "shape":
            arrays[0] = arrays[0].reshape(4, 3)
        elif fault == "count":
            arrays = arrays[:2]
        elif fault == "weight":
            weight = 10**6
        elif fault == "range":
            arrays[0][0, 0] = 50.0
        elif fault == "crash":
            raise RuntimeError("training crashed")
        return arrays, weight, {"loss": 0.5}


def legacy_round(nodes, arrays, weights, *, workflow=None, drop=None, bad=None, mods=None,
                 fresh_process=True, rounds=1, grid=None):
    app = ClientApp(client_fn=lambda ctx: Fit(ctx.node_id, arrays, weights, bad).to_client(),
                    mods=[secagg_mod] if mods is None else mods)
    grid = grid or InProcessGrid(app, nodes, drop=drop, fresh_process=fresh_process)
    manager = SimpleClientManager()
    for nid in nodes:
        manager.register(GridClientProxy(nid, grid, 1))
    state = RecordDict()
    zeros = [np.zeros(s, d) for s, d in zip(SHAPES, DTYPES)]
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(ndarrays_to_parameters(zeros), True)
    n = len(nodes)
    context = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n),
                            client_manager=manager)
    workflow = workflow or SecAggWorkflow(max_weight=100.0, clipping_range=1.0)
    for r in range(1, rounds + 1):
        state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: r})
        workflow(grid, context)
    result = parameters_to_ndarrays(compat.arrayrecord_to_parameters(state.array_records[MAIN_PARAMS_RECORD], True))
    return result, workflow, grid


def assert_close(result, expected, tol=1e-6):
    assert [r.shape for r in result] == [e.shape for e in expected]
    for r, e in zip(result, expected):
        assert np.abs(r.astype(np.float64) - e).max() < tol


# --- the legacy workflow and mod ----------------------------------------------------------------

def test_weighted_mean_is_exact_to_quantisation_with_shapes_and_dtypes():
    nodes = node_ids(10)
    arrays, weights = updates(nodes)
    result, workflow, grid = legacy_round(nodes, arrays, weights)
    outcome = workflow.outcomes[-1]
    assert outcome.aborted is None and set(outcome.contributors) == set(nodes)
    assert [r.dtype for r in result] == [np.dtype(d) for d in DTYPES]
    assert_close(result, weighted_mean(arrays, weights, nodes))
    assert outcome.total_weight == pytest.approx(sum(weights.values()), abs=1e-4)
    # Every node kept its client as bytes in its context between messages, and none is left over.
    for nid in nodes:
        kept = grid.contexts[nid].state.config_records[STATE]
        assert "snapshot" not in kept  # the round ended: nothing secret stays


def test_no_update_or_sample_count_travels_in_the_clear():
    nodes = node_ids(6)
    arrays, weights = updates(nodes)
    seen = []

    class Spy(InProcessGrid):
        def send_and_receive(self, messages, *, timeout=None):
            replies = super().send_and_receive(messages, timeout=timeout)
            seen.extend(replies)
            return replies

    app = ClientApp(client_fn=lambda ctx: Fit(ctx.node_id, arrays, weights).to_client(), mods=[secagg_mod])
    legacy_round(nodes, arrays, weights, grid=Spy(app, nodes))
    for reply in seen:
        assert not reply.content.array_records and not reply.content.metric_records
        assert list(reply.content.config_records) == [RECORD]
        frame = reply.content.config_records[RECORD]["frame"]
        for nid in nodes:
            assert arrays[nid][0].tobytes()[:16] not in frame


def test_two_rounds_reuse_nodes_and_state():
    nodes = node_ids(8)
    arrays, weights = updates(nodes, seed=3)
    result, workflow, _ = legacy_round(nodes, arrays, weights, rounds=2)
    assert [o.round for o in workflow.outcomes] == [1, 2]
    assert all(o.aborted is None for o in workflow.outcomes)
    assert_close(result, weighted_mean(arrays, weights, nodes))


@pytest.mark.parametrize("stage", ["ShareKeys", "MaskedInput", "Unmask"])
def test_missing_replies_are_dropouts_and_the_rest_is_exact(stage):
    nodes = node_ids(12)
    arrays, weights = updates(nodes, seed=1)
    silent = {nodes[2], nodes[7]}
    workflow = SecAggWorkflow(6, 3, max_weight=100.0, clipping_range=1.0)

    def drop(nid, msg):
        return nid in silent and msg.content.config_records[RECORD]["stage"] == stage

    result, workflow, _ = legacy_round(nodes, arrays, weights, workflow=workflow, drop=drop)
    outcome = workflow.outcomes[-1]
    assert outcome.aborted is None
    contributors = set(outcome.contributors)
    if stage == "Unmask":
        assert contributors == set(nodes)  # their masked inputs arrived before they went silent
    else:
        assert contributors == set(nodes) - silent
    assert_close(result, weighted_mean(arrays, weights, contributors))


@pytest.mark.parametrize("fault, error", [
    ("nan", "InvalidInput"), ("shape", "InvalidInput"), ("count", "InvalidInput"),
    ("weight", "InvalidInput"), ("range", "InvalidInput"), ("crash", "LocalProtocolError"),
])
def test_bad_input_is_refused_by_name_and_the_round_goes_on(fault, error):
    nodes = node_ids(10)
    arrays, weights = updates(nodes, seed=2)
    bad_node = nodes[4]
    workflow = SecAggWorkflow(6, 3, max_weight=100.0, clipping_range=1.0)
    result, workflow, _ = legacy_round(nodes, arrays, weights, workflow=workflow, bad={bad_node: fault})
    outcome = workflow.outcomes[-1]
    assert outcome.aborted is None
    assert set(outcome.contributors) == set(nodes) - {bad_node}
    refusal = outcome.refusals[bad_node]
    assert type(refusal).__name__ == error
    assert f"node {bad_node}" in str(refusal) and "round 1" in str(refusal)
    assert_close(result, weighted_mean(arrays, weights, set(nodes) - {bad_node}))


def test_a_plain_train_message_is_refused_not_answered_in_the_clear():
    nodes = node_ids(3)
    arrays, weights = updates(nodes)
    app = ClientApp(client_fn=lambda ctx: Fit(ctx.node_id, arrays, weights).to_client(), mods=[secagg_mod])
    grid = InProcessGrid(app, nodes)
    from flwr.common import FitIns

    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(arrays[nodes[0]]), {}), True)
    reply = grid.send_and_receive([Message(content, dst_node_id=nodes[0], message_type="train", group_id="4")])[0]
    assert reply.has_error()
    refusal = error_from_reason(reply.error.reason)
    assert type(refusal).__name__ == "MalformedMessage" and f"node {nodes[0]}, round 4" in str(refusal)


def test_a_reply_without_the_secagg_record_is_a_typed_dropout():
    nodes = node_ids(9)
    arrays, weights = updates(nodes, seed=4)
    rogue = nodes[5]

    def mod(msg, ctxt, call_next):
        if ctxt.node_id == rogue:
            return Message(RecordDict({"x": ConfigRecord({"junk": 1})}), reply_to=msg)
        return secagg_mod(msg, ctxt, call_next)

    workflow = SecAggWorkflow(6, 3, max_weight=100.0, clipping_range=1.0)
    result, workflow, _ = legacy_round(nodes, arrays, weights, workflow=workflow, mods=[mod])
    outcome = workflow.outcomes[-1]
    assert type(outcome.refusals[rogue]).__name__ == "MalformedMessage"
    assert "round 1" in str(outcome.refusals[rogue])
    assert set(outcome.contributors) == set(nodes) - {rogue}
    assert_close(result, weighted_mean(arrays, weights, set(nodes) - {rogue}))


def test_too_many_dropouts_abort_with_the_reason_and_keep_the_model():
    nodes = node_ids(6)
    arrays, weights = updates(nodes)
    workflow = SecAggWorkflow(max_weight=100.0, clipping_range=1.0)
    result, workflow, _ = legacy_round(
        nodes, arrays, weights, workflow=workflow,
        drop=lambda nid, msg: nid != nodes[0] and msg.content.config_records[RECORD]["stage"] == "MaskedInput")
    outcome = workflow.outcomes[-1]
    assert outcome.aborted is not None and "MaskedInput" in str(outcome.aborted)
    assert all(np.all(r == 0) for r in result)  # the global model is unchanged


def test_weak_shares_are_refused_before_the_round():
    with pytest.raises(ConfigurationError, match="parameter finder"):
        from secagg.flower import build_config

        build_config(500, 10, round=1, num_shares=3, reconstruction_threshold=2)


def test_snapshot_survives_a_fresh_process_per_message():
    nodes = node_ids(7)
    arrays, weights = updates(nodes, seed=5)
    result, _, grid = legacy_round(nodes, arrays, weights, fresh_process=True)
    assert grid.calls >= 4
    assert_close(result, weighted_mean(arrays, weights, nodes))


def test_tags_round_trip_the_error_class():
    from secagg.errors import PrivacyBudgetExhausted

    text = "<class 'x'>:<'" + tagged(PrivacyBudgetExhausted("node 9, round 3: budget spent")) + "'>"
    error = error_from_reason(text)
    assert isinstance(error, PrivacyBudgetExhausted) and "node 9, round 3" in str(error)
    assert type(error_from_reason("Timeout")).__name__ == "SecAggError"


# --- the Message-API wrapper ---------------------------------------------------------------------

def message_app(arrays, weights, mod=secagg_mod):
    app = MessageClientApp(mods=[mod])

    @app.train()
    def train(msg, ctx):
        nid = ctx.node_id
        return Message(RecordDict({"arrays": ArrayRecord(arrays[nid]),
                                   "metrics": MetricRecord({"num-examples": weights[nid]})}), reply_to=msg)

    return app


def test_message_api_fedavg_aggregates_through_secagg():
    nodes = node_ids(11)
    arrays, weights = updates(nodes, seed=6)
    grid = InProcessGrid(message_app(arrays, weights), nodes, fresh_process=True)
    strategy = SecAggStrategy(MessageFedAvg(fraction_evaluate=0.0), max_weight=100.0, clipping_range=1.0)
    zeros = [np.zeros(s, d) for s, d in zip(SHAPES, DTYPES)]
    result = strategy.start(grid, ArrayRecord(zeros), num_rounds=2)
    assert [o.round for o in strategy.outcomes] == [1, 2]
    assert_close(result.arrays.to_numpy_ndarrays(), weighted_mean(arrays, weights, nodes))


def test_per_client_strategies_are_refused():
    with pytest.raises(ConfigurationError, match="only their sum"):
        SecAggStrategy(FedMedian())


# --- DP, budgets, signed models, metrics ---------------------------------------------------------

def test_dp_round_releases_a_noised_mean_of_clipped_deltas_and_charges_budgets(tmp_path):
    from secagg.privacy.budget import PrivacyBudget

    nodes = node_ids(10)
    arrays, weights = updates(nodes, seed=7)
    for nid in nodes:
        arrays[nid] = [a * 0.1 for a in arrays[nid]]  # norms well under the clip: no clipping bias

    def budget(ctxt):
        return PrivacyBudget(6.0, 1e-5, path=tmp_path / f"{ctxt.node_id}.sqlite", client=ctxt.node_id)

    mod = make_secagg_mod(budget=budget)
    grid = InProcessGrid(message_app(arrays, weights, mod), nodes, fresh_process=True)
    strategy = SecAggStrategy(MessageFedAvg(fraction_evaluate=0.0), dp=DPOptions(clip=1.0, noise_multiplier=1.0))
    zeros = [np.zeros(s, d) for s, d in zip(SHAPES, DTYPES)]
    strategy.start(grid, ArrayRecord(zeros), num_rounds=2)
    first, second = strategy.outcomes
    assert first.aborted is None and first.epsilon > 0
    mean = [sum(arrays[n][i].astype(np.float64) for n in nodes) / len(nodes) for i in range(3)]
    # The noise of the mean has std z * C / m = 0.1 per coordinate; the update itself is ~0.06.
    err = np.concatenate([(np.asarray(r) - m).ravel() for r, m in zip(strategy_arrays(first), mean)])
    assert 0.02 < float(np.std(err)) < 0.3
    # Each node's budget (epsilon 6) holds one round (about 4.5); the second is refused by every
    # node, before it sends anything, so the round aborts and nothing more is charged.
    assert strategy.total_epsilon(1e-5) == pytest.approx(first.epsilon, rel=0.05)  # one released round
    assert first.plan.min_clients == len(nodes) - 1  # default: n less the planned 10% dropouts
    summary, refused = first.population_budget()
    assert summary.clients == len(nodes) and summary.exhausted == 0 and refused == []
    assert summary.epsilon_max == pytest.approx(summary.epsilon_min) and summary.epsilon_max > 0
    assert second.population_budget()[1] == sorted(nodes)
    assert second.aborted is not None
    assert {type(e).__name__ for e in second.refusals.values()} == {"PrivacyBudgetExhausted"}
    assert set(second.refusals) == set(nodes)
    spent = PrivacyBudget(6.0, 1e-5, path=tmp_path / f"{nodes[0]}.sqlite", client=nodes[0]).report()
    assert spent.rounds == 1 and 0 < spent.epsilon_spent <= 6.0


def strategy_arrays(outcome):
    return outcome.arrays


def test_a_node_that_demands_noise_refuses_a_round_without_enough():
    nodes = node_ids(6)
    arrays, weights = updates(nodes)
    demanding = make_secagg_mod(min_noise_multiplier=1.0)
    _, plain, _ = legacy_round(nodes, arrays, weights, mods=[demanding])
    outcome = plain.outcomes[-1]
    assert outcome.aborted is not None
    assert {type(e).__name__ for e in outcome.refusals.values()} == {"WeakConfig"}
    grid = InProcessGrid(message_app(arrays, weights, demanding), nodes)
    noisy = SecAggStrategy(MessageFedAvg(fraction_evaluate=0.0), dp=DPOptions(clip=1.0, noise_multiplier=1.5))
    noisy.start(grid, ArrayRecord([np.zeros(s, d) for s, d in zip(SHAPES, DTYPES)]), num_rounds=1)
    assert noisy.outcomes[-1].aborted is None


def test_signed_model_accepted_and_tampered_model_refused():
    from secagg.model_signing import operator_key_from_seed

    key = operator_key_from_seed(b"\x01" * 32)
    nodes = node_ids(8)
    arrays, weights = updates(nodes, seed=8)
    good = make_secagg_mod(model_key=key.public_key(), model_id="digits")
    workflow = SecAggWorkflow(max_weight=100.0, clipping_range=1.0, model_signer=(key, "digits"))
    result, workflow, _ = legacy_round(nodes, arrays, weights, workflow=workflow, mods=[good])
    assert workflow.outcomes[-1].aborted is None
    assert_close(result, weighted_mean(arrays, weights, nodes))
    other = operator_key_from_seed(b"\x02" * 32)
    telemetry = pytest.importorskip("secagg.telemetry").Telemetry()
    forged = SecAggWorkflow(max_weight=100.0, clipping_range=1.0, model_signer=(other, "digits"),
                            telemetry=telemetry)
    _, forged, _ = legacy_round(nodes, arrays, weights, workflow=forged, mods=[good])
    outcome = forged.outcomes[-1]
    assert outcome.aborted is not None
    assert {type(e).__name__ for e in outcome.refusals.values()} == {"BadModelSignature"}
    assert f"fl_model_signature_verification_failure_total {float(len(nodes))}" in telemetry.text()


def test_metrics_count_rounds_refusals_and_dropouts():
    telemetry = pytest.importorskip("secagg.telemetry")
    t = telemetry.Telemetry()
    nodes = node_ids(10)
    arrays, weights = updates(nodes, seed=9)
    workflow = SecAggWorkflow(6, 3, max_weight=100.0, clipping_range=1.0, telemetry=t)
    legacy_round(nodes, arrays, weights, workflow=workflow, bad={nodes[1]: "nan"},
                 drop=lambda nid, msg: nid == nodes[8] and msg.content.config_records[RECORD]["stage"] == "Unmask")
    text = t.text()
    assert 'fl_round_total{status="completed"} 1.0' in text
    assert 'secagg_client_refusals_total{reason="InvalidInput"} 1.0' in text
    assert 'secagg_client_dropouts_total{stage="unmask"} 1.0' in text


def test_mistyped_records_are_refused_by_name():
    nodes = node_ids(3)
    arrays, weights = updates(nodes)
    app = ClientApp(client_fn=lambda ctx: Fit(ctx.node_id, arrays, weights).to_client(), mods=[secagg_mod])
    grid = InProcessGrid(app, nodes)
    for record, complaint in [({"frame": b"x", "client": "1", "stage": "AdvertiseKeys"}, "'secagg.client' is str"),
                              ({"client": 1, "stage": "AdvertiseKeys"}, "no 'frame'"),
                              ({"frame": b"x", "client": 1, "stage": "ShareKeys"}, "keeps no secagg round")]:
        msg = Message(RecordDict({RECORD: ConfigRecord(record)}), dst_node_id=nodes[1], message_type="train",
                      group_id="2")
        reply = grid.send_and_receive([msg])[0]
        assert reply.has_error()
        error = error_from_reason(reply.error.reason)
        assert complaint in str(error) and f"node {nodes[1]}" in str(error) and "round 2" in str(error)


def test_accuracy_reaches_the_metric():
    from secagg.flower import report_accuracy

    t = pytest.importorskip("secagg.telemetry").Telemetry()
    legacy = report_accuracy(lambda rnd, params, config: (0.3, {"accuracy": 0.875}), t)
    message = report_accuracy(lambda rnd, arrays: MetricRecord({"accuracy": 0.5}), t)
    legacy(3, None, {})
    message(4, None)
    assert 'fl_model_accuracy{round="3"} 0.875' in t.text() and 'fl_model_accuracy{round="4"} 0.5' in t.text()


def test_layout_round_trip_and_refusals():
    arrays = [np.zeros((2, 3), np.float32), np.zeros(4, np.float64)]
    layout = Layout.of(arrays, weighted=True, max_weight=10.0, weight_key="num-examples", message_api=True)
    assert Layout.from_bytes(layout.to_bytes()) == layout
    assert layout.dim == 11
    with pytest.raises(ConfigurationError, match="int64"):
        Layout.of([np.zeros(3, np.int64)], weighted=True, max_weight=1.0, weight_key="w", message_api=True)
