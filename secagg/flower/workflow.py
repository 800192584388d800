"""The server side: one secagg round over a Flower ``Grid``, as a legacy fit workflow with the
contract of ``SecAggPlusWorkflow``, and as a wrapper for Flower's Message-API strategies.

Theory of operation. :func:`run_secure_round` is a driver of the sans-IO ``secagg.Server``
(ROUNDS.md, "one driver seam"): it puts each frame the server emits into a Flower ``Message`` to
that client's node, sends a phase's messages with ``grid.send_and_receive`` (the phase deadline is
the workflow's ``timeout``), and feeds every reply back. An error reply or a missing reply is a
dropout (``Server.peer_lost`` / ``close_phase``); a reply without a well-formed frame record is a
typed ``MalformedMessage`` for that node and round, and the node is dropped too. A refusal a
client reports (``[secagg:<Class>]`` in Flower's error text: bad input, a spent privacy budget, a
model whose signature fails) is rebuilt as that class and kept in ``SecureRoundOutcome.refusals``
and in the metrics.

Node ids (64-bit in Flower) map to client indices 1..n in sorted order for the round; the graph is
drawn from the round's random seed, so the order gives the server no say in who neighbours whom.
Abort notices to clients that already left are not relayed (a Flower round trip each): a client's
round state is replaced by its next AdvertiseKeys.

The released aggregate is the weighted mean sum(w x) / sum(w) of the contributors' arrays (or,
with DP, the global model plus the noised mean of clipped deltas), handed to the strategy as the
one result of the round, so FedAvg and its relatives keep their own bookkeeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cbor2
import numpy as np

from secagg.config import EXTERNAL_ENCODING, MIN_CLIENTS, RoundConfig
from secagg.crypto.kdf import SESSION_ID_BYTES
from secagg.crypto.randomness import system_random
from secagg.errors import ConfigurationError, MalformedMessage, RoundAborted, SecAggError
from secagg.flower.layout import RECORD, Layout, error_from_reason
from secagg.graph import GRAPH_SEED_BYTES
from secagg.params import AdversaryClass
from secagg.protocol.rounds import PEER_ENDED
from secagg.protocol.server import Server
from secagg.quantize import Quantizer

ADVERTISE = "AdvertiseKeys"
MASKED_INPUT = "MaskedInput"


@dataclass(frozen=True, slots=True)
class DPOptions:
    """Distributed discrete Gaussian noise on clipped model deltas (secagg.privacy).

    ``clip``: the L2 norm every client clips its delta to. ``noise_multiplier``: z, the noise of
    the sum in units of ``clip``. ``min_clients``: the guarantee holds when at least this many
    contribute, and a round with fewer aborts (default: the sampled clients less the planned
    dropouts, n - floor(dropout_rate * n); each client's noise is sized for a sum of this many,
    so a low value costs accuracy). ``delta``: for the epsilon the workflow reports."""

    clip: float
    noise_multiplier: float
    min_clients: int | None = None
    delta: float = 1e-5


@dataclass
class SecureRoundOutcome:
    """What one secure round released, and what happened to whom."""

    round: int
    nodes: dict[int, int]  # client index -> Flower node id
    arrays: list[np.ndarray] | None  # the released aggregate, in the model's shapes and dtypes
    total_weight: float | None  # sum of the contributors' sample counts (weighted rounds)
    contributors: tuple[int, ...] = ()  # node ids
    dropped: tuple[int, ...] = ()
    excluded: dict[int, str] = field(default_factory=dict)  # node id -> error class
    refusals: dict[int, SecAggError] = field(default_factory=dict)  # node id -> the client's refusal
    aborted: RoundAborted | None = None
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0  # secagg frames, server to clients
    bytes_received: int = 0
    epsilon: float | None = None  # DP rounds: this round's epsilon at DPOptions.delta
    clipped: float | None = None  # DP rounds: the (noised) number of clients that clipped
    budgets: dict = field(default_factory=dict)  # node id -> BudgetState it reported (DP rounds)
    plan: object = field(default=None, repr=False)  # DP rounds: the round's DPPlan
    server: Server | None = field(default=None, repr=False)  # while the round is being recorded

    def population_budget(self):
        """The population's privacy-budget state in a DP round, from what nodes reported (public
        numbers, never an update): ``(BudgetSummary or None, nodes that refused for a spent
        budget)``."""
        from secagg.errors import PrivacyBudgetExhausted
        from secagg.privacy.budget import population_budget

        refused = sorted(n for n, e in self.refusals.items() if isinstance(e, PrivacyBudgetExhausted))
        return population_budget(self.budgets.values()), refused


def build_config(n: int, dim: int, *, round: int, num_shares=None, reconstruction_threshold=None,
                 bits: int = 32, value_range: float = 1.0, levels: int | None = None,
                 dropout_rate: float = 0.1, adversarial_rate: float = 0.05,
                 session_id: bytes | None = None, rng=system_random) -> RoundConfig:
    """The round's config. ``num_shares`` / ``reconstruction_threshold`` follow Flower's meaning
    (an int, or a float fraction of the sampled clients / of the shares; shares count the client
    itself, so the degree is ``num_shares - 1``); ``None`` lets secagg's parameter finder choose.
    A choice weaker than the finder's for n and the rates is refused, naming the finder's."""
    if n < MIN_CLIENTS:
        raise ConfigurationError(f"secure aggregation needs at least {MIN_CLIENTS} clients; the strategy sampled {n}")
    session_id = session_id if session_id is not None else rng(SESSION_ID_BYTES)
    common = dict(bits=bits, value_range=value_range, levels=levels, round=round, session_id=session_id,
                  dropout_rate=dropout_rate, adversarial_rate=adversarial_rate, rng=rng)
    if num_shares is None and reconstruction_threshold is None:
        return RoundConfig.create(n, dim, full_graph="auto", **common)  # full graph if too few for sparse
    shares = num_shares if num_shares is not None else n
    if isinstance(shares, float):
        shares = max(3, round_half_up(shares * n))
    degree = min(int(shares) - 1, n - 1)
    if degree < n - 1 and degree % 2:
        degree += 1  # the graph needs an even degree: one more neighbour, never fewer
    degree = min(degree, n - 1)
    if degree == n - 2:
        degree = n - 1
    t = reconstruction_threshold
    if t is None:
        t = math.ceil(2 * degree / 3)
    elif isinstance(t, float):
        t = max(2, round_half_up(t * (degree + 1)))
    t = min(int(t), degree)
    quantizer = None if levels == EXTERNAL_ENCODING else Quantizer.for_clients(
        n, bits=bits, value_range=value_range, levels=levels)
    config = RoundConfig(
        session_id=session_id, round=round, num_clients=n, dim=dim, bits=bits, degree=degree,
        threshold=t, graph_seed=rng(GRAPH_SEED_BYTES), value_range=float(value_range),
        levels=EXTERNAL_ENCODING if quantizer is None else quantizer.levels,
        adversary=AdversaryClass.SEMI_HONEST, adversarial_rate=float(adversarial_rate),
        dropout_rate=float(dropout_rate))
    weak = config.weakness()
    if weak:
        raise ConfigurationError(f"num_shares = {num_shares}, reconstruction_threshold = "
                                 f"{reconstruction_threshold} give (k, t) = ({degree}, {t}) for {n} "
                                 f"clients, which clients refuse: {weak}. Leave both None to let "
                                 "the parameter finder choose")
    return config


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


class SecureAggregation:
    """The options of secure aggregation over Flower, shared by the workflow and the strategy
    wrapper. ``max_weight``: the largest sample count a client may report (a larger one is
    refused, not capped); ``clipping_range``: every coordinate of a (weighted) update lies in
    [-clipping_range, clipping_range] or the client refuses it; ``timeout``: seconds each phase
    waits for replies (``None``: until all reply). ``dp``: :class:`DPOptions`. ``telemetry``: a
    ``secagg.telemetry.Telemetry`` that records every round. ``model_signer``: ``(operator
    Ed25519 private key, model id)``: the global model goes out signed for its round."""

    def __init__(self, num_shares: int | float | None = None,
                 reconstruction_threshold: int | float | None = None, *,
                 max_weight: float = 1000.0, clipping_range: float = 8.0, bits: int = 32,
                 timeout: float | None = None, dropout_rate: float = 0.1, adversarial_rate: float = 0.05,
                 weighted: bool = True, dp: DPOptions | None = None, telemetry=None,
                 model_signer: tuple | None = None, on_round: Callable | None = None) -> None:
        if not (isinstance(max_weight, (int, float)) and max_weight > 0):
            raise ConfigurationError(f"max_weight must be > 0, got {max_weight!r}")
        if not (isinstance(clipping_range, (int, float)) and math.isfinite(clipping_range) and clipping_range > 0):
            raise ConfigurationError(f"clipping_range must be a finite number > 0, got {clipping_range!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.num_shares = num_shares
        self.reconstruction_threshold = reconstruction_threshold
        self.max_weight = float(max_weight)
        self.clipping_range = float(clipping_range)
        self.bits = bits
        self.timeout = timeout
        self.dropout_rate = dropout_rate
        self.adversarial_rate = adversarial_rate
        self.weighted = weighted and dp is None  # DP-FedAvg: the unweighted mean of clipped deltas
        self.dp = dp
        self.telemetry = telemetry
        self.model_signer = model_signer
        self.on_round = on_round
        self.session_id = system_random(SESSION_ID_BYTES)  # one session per workflow object
        self.outcomes: list[SecureRoundOutcome] = []

    def _plan(self, shapes, n: int, min_clients: int):
        from secagg.privacy.encoder import DPPlan

        dp = self.dp
        m_min = dp.min_clients if dp.min_clients is not None else max(
            min_clients, n - math.floor(self.dropout_rate * n))
        if m_min > n:
            raise ConfigurationError(f"DP needs at least min_clients = {m_min} contributors; the "
                                     f"strategy sampled {n}")
        return DPPlan.create(shapes, clip=dp.clip, noise_multiplier=dp.noise_multiplier,
                             min_clients=m_min, max_clients=n)

    def run(self, grid, round: int, fit_contents: dict, global_arrays: list[np.ndarray], *,
            message_api: bool, weight_key: str = "num-examples") -> SecureRoundOutcome:
        """One secure round: ``fit_contents`` maps each sampled node id to the ``RecordDict`` of
        its training instruction (sent at the MaskedInput stage)."""
        nodes = sorted(fit_contents)
        n = len(nodes)
        layout = Layout.of(global_arrays, weighted=self.weighted, max_weight=self.max_weight,
                           weight_key=weight_key, message_api=message_api)
        if self.dp is not None:
            probe = build_config(n, layout.size, round=round, num_shares=self.num_shares,
                                 reconstruction_threshold=self.reconstruction_threshold, bits=self.bits,
                                 value_range=self.clipping_range, dropout_rate=self.dropout_rate,
                                 adversarial_rate=self.adversarial_rate, session_id=self.session_id)
            plan = self._plan(layout.shapes, n, probe.threshold)
            layout = Layout.of(global_arrays, weighted=False, max_weight=self.max_weight,
                               weight_key=weight_key, message_api=message_api, plan=plan)
            config = build_config(n, plan.ring_dim, round=round, num_shares=self.num_shares,
                                  reconstruction_threshold=self.reconstruction_threshold, bits=plan.bits,
                                  levels=EXTERNAL_ENCODING, dropout_rate=self.dropout_rate,
                                  adversarial_rate=self.adversarial_rate, session_id=self.session_id)
        else:
            config = build_config(n, layout.dim, round=round, num_shares=self.num_shares,
                                  reconstruction_threshold=self.reconstruction_threshold, bits=self.bits,
                                  value_range=max(self.clipping_range, 1.0), dropout_rate=self.dropout_rate,
                                  adversarial_rate=self.adversarial_rate, session_id=self.session_id)
        signature = None
        if self.model_signer is not None:
            from secagg.model_signing import sign_model

            key, model_id = self.model_signer
            signature = sign_model(global_arrays, round, model_id, key).to_bytes()
        from secagg.crypto import shamir

        shamir.warm_up_for_round(n, config.threshold)  # once per process, outside the round's clock
        outcome = run_secure_round(grid, config, nodes, fit_contents, layout, timeout=self.timeout,
                                   model_signature=signature,
                                   min_contributors=None if layout.plan is None else max(
                                       config.threshold, layout.plan.min_clients))
        if outcome.aborted is None:
            self._release(outcome, layout, global_arrays)
        if self.telemetry is not None:
            self.telemetry.observe_budgets(outcome.budgets.values())
            self.telemetry.observe_round(outcome.server, phase_seconds=outcome.phase_seconds,
                                         refusals={i: outcome.refusals[nid] for i, nid in outcome.nodes.items()
                                                   if nid in outcome.refusals})
        outcome.server = None  # the round's state goes; the outcome stays
        self.outcomes.append(outcome)
        if self.on_round is not None:
            self.on_round(outcome)
        return outcome

    def total_epsilon(self, delta: float | None = None) -> float:
        """The (epsilon, ``delta``)-DP guarantee of every DP round this workflow released so far,
        composed (PLD or RDP via dp-accounting, whichever is smaller; rounds whose plans differ
        included). 0 before any DP round."""
        from secagg.privacy.accounting import composed_accounting

        delta = delta if delta is not None else (self.dp.delta if self.dp is not None else 1e-5)
        mechanisms = [o.plan.round_mechanism() for o in self.outcomes if o.plan is not None and o.aborted is None]
        return composed_accounting([(m, 1.0, 1) for m in mechanisms], delta=delta).epsilon

    def _release(self, outcome: SecureRoundOutcome, layout: Layout, global_arrays) -> None:
        result = outcome.server.result()
        m = len(result.contributors)
        if layout.plan is not None:
            from secagg.privacy.encoder import DPDecoder

            agg = DPDecoder(layout.plan).decode(result.ring_sum, m)
            base = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in global_arrays])
            outcome.arrays = layout.arrays(base + agg.flat / m)
            outcome.total_weight = float(m)  # DP-FedAvg: every contributor counts once
            outcome.clipped = agg.clipped_count
            outcome.epsilon = layout.plan.epsilon(delta=self.dp.delta)
            outcome.plan = layout.plan
            return
        values = result.values
        if layout.weighted:
            u = float(values[-1])
            if not u > 0:
                raise RoundAborted(f"round {outcome.round}: the contributors' summed weight is {u}; "
                                   "no mean can be released", round=outcome.round, cause="invalid")
            outcome.arrays = layout.arrays(values[:-1] / u)
            outcome.total_weight = u * layout.max_weight
        else:
            outcome.arrays = layout.arrays(values / m)
            outcome.total_weight = float(m)


def run_secure_round(grid, config: RoundConfig, nodes: list[int], fit_contents: dict, layout: Layout, *,
                     timeout: float | None = None, model_signature: bytes | None = None,
                     min_contributors: int | None = None) -> SecureRoundOutcome:
    """Drive one ``secagg.Server`` over ``grid``; the outcome keeps the server in ``.server``."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.app.message_type import MessageType

    started = time.perf_counter()
    index = {nid: i + 1 for i, nid in enumerate(nodes)}
    node_of = {i: nid for nid, i in index.items()}
    server = Server(config, min_contributors=min_contributors)
    outcome = SecureRoundOutcome(round=config.round, nodes=node_of, arrays=None, total_weight=None)
    outcome.server = server
    layout_bytes = layout.to_bytes()
    group = str(config.round)
    out = server.start()
    while out and not server.finished:
        stage = server.phase.value
        phase_started = time.perf_counter()
        messages = []
        for o in out:
            if server.peers[o.recipient] in PEER_ENDED:
                continue  # a notice to a client that already left: not relayed
            record = {"frame": o.frame, "client": o.recipient, "stage": stage}
            if stage == ADVERTISE:
                record["layout"] = layout_bytes
            content = RecordDict()
            if stage == MASKED_INPUT:
                content = _copy(fit_contents[node_of[o.recipient]])
                if model_signature is not None:
                    record["model_signature"] = model_signature
            content[RECORD] = ConfigRecord(record)
            outcome.bytes_sent += len(o.frame)
            messages.append(Message(content, dst_node_id=node_of[o.recipient],
                                    message_type=MessageType.TRAIN, group_id=group))
        replies = list(grid.send_and_receive(messages, timeout=timeout)) if messages else []
        nxt = []
        for reply in replies:
            nid = reply.metadata.src_node_id
            client = index.get(nid)
            if client is None or server.finished:
                continue
            if reply.has_error():
                outcome.refusals[nid] = error_from_reason(reply.error.reason)
                nxt += server.peer_lost(client)
                continue
            frame = _reply_frame(reply, nid, config.round)
            if isinstance(frame, SecAggError):
                outcome.refusals[nid] = frame
                nxt += server.peer_lost(client)
                continue
            if not frame:
                continue  # the client ignored a repeat: nothing to add
            outcome.bytes_received += len(frame)
            if stage == ADVERTISE:
                state = _reported_budget(reply, nid)
                if state is not None:
                    outcome.budgets[nid] = state
            nxt += server.receive(frame, client)
        if not server.finished and server.phase.value == stage:
            nxt += server.close_phase()  # the deadline passed: whoever did not answer has dropped
        outcome.phase_seconds[stage] = outcome.phase_seconds.get(stage, 0.0) + time.perf_counter() - phase_started
        out = [] if server.finished else nxt
    outcome.seconds = time.perf_counter() - started
    try:
        result = server.result()
    except RoundAborted as exc:
        outcome.aborted = exc
    else:
        outcome.contributors = tuple(node_of[c] for c in result.contributors)
        outcome.dropped = tuple(node_of[c] for c in result.dropped)
    outcome.excluded = {node_of[c]: type(e).__name__ for c, e in server.excluded.items()}
    return outcome


def _reported_budget(reply, nid: int):
    """The ``BudgetState`` a node reported with its advert, or None (no DP budget, or junk)."""
    from secagg.privacy.budget import BudgetState

    data = reply.content.config_records[RECORD].get("budget")
    if type(data) is not bytes:
        return None
    try:
        fields = cbor2.loads(data)
        fields["client"] = nid
        return BudgetState(**fields)
    except (ValueError, TypeError, cbor2.CBORDecodeError):
        return None


def _copy(content):
    from flwr.app import RecordDict

    copy = RecordDict()
    for key, value in content.items():
        copy[key] = value
    return copy


def _reply_frame(reply, nid: int, round: int):
    """The frame in a client's reply, or the typed error that says what is wrong with the reply."""
    where = f"node {nid}, round {round}"
    record = reply.content.config_records.get(RECORD) if reply.has_content() else None
    if record is None:
        return MalformedMessage(f"{where}: the reply has no '{RECORD}' record")
    frame = record.get("frame")
    if type(frame) is not bytes:
        return MalformedMessage(f"{where}: '{RECORD}.frame' is {type(frame).__name__}, expected bytes")
    return frame


def report_accuracy(evaluate_fn, telemetry, key: str = "accuracy"):
    """``evaluate_fn`` (a strategy's centralised evaluation, legacy or Message API) that also sets
    ``fl_model_accuracy{round}`` from the ``key`` metric it returns."""
    def evaluate(server_round, *args, **kwargs):
        result = evaluate_fn(server_round, *args, **kwargs)
        metrics = result[1] if isinstance(result, tuple) else result
        if metrics is not None and key in metrics:
            telemetry.set_model_accuracy(server_round, float(metrics[key]))
        return result

    return evaluate


# --- the legacy workflow (DefaultWorkflow(fit_workflow=...)) -----------------------------------

class SecAggWorkflow(SecureAggregation):
    """Drop-in for Flower's ``SecAggPlusWorkflow``: ``DefaultWorkflow(fit_workflow=
    SecAggWorkflow(num_shares, reconstruction_threshold, max_weight=..., clipping_range=...,
    timeout=...))`` with ``secagg_mod`` on the clients. See :class:`SecureAggregation`."""

    def __call__(self, grid, context) -> None:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
        from flwr.server.workflow.constant import Key as WorkflowKey

        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        current_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD],
                                                      keep_input=True)
        instructions = context.strategy.configure_fit(current_round, parameters, context.client_manager)
        if not instructions:
            return
        proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        contents = {proxy.node_id: compat.fitins_to_recorddict(fitins, True) for proxy, fitins in instructions}
        outcome = self.run(grid, current_round, contents, parameters_to_ndarrays(parameters),
                           message_api=False)
        failures = [error for error in outcome.refusals.values()]
        if outcome.aborted is not None:
            context.strategy.aggregate_fit(current_round, [], failures + [outcome.aborted])
            return
        # One result carries the aggregate: the strategy's mean of one is the aggregate itself,
        # and no client's sample count or metrics are released.
        first = proxies[outcome.contributors[0]]
        fitres = FitRes(status=Status(Code.OK, "secure aggregate"),
                        parameters=ndarrays_to_parameters(outcome.arrays),
                        num_examples=max(1, int(round(outcome.total_weight or 0))),
                        metrics={"secagg_contributors": len(outcome.contributors)})
        aggregated, metrics = context.strategy.aggregate_fit(current_round, [(first, fitres)], failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)


# --- the Message-API wrapper -------------------------------------------------------------------

# Strategies that need each client's update (robust aggregation); under secure aggregation the
# server has only the sum, so wrapping them would silently turn them into FedAvg.
PER_CLIENT_STRATEGIES = ("FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum", "Bulyan")


class SecAggStrategy(SecureAggregation):
    """Wraps a Flower Message-API strategy (``flwr.serverapp.strategy.FedAvg`` and the strategies
    that average: FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad, ...) so its training rounds
    aggregate through secagg: ``SecAggStrategy(FedAvg(...)).start(grid, initial_arrays, ...)``.

    The strategy samples and configures as usual; each training round then runs as one secure
    round, and ``aggregate_train`` receives one reply carrying the aggregate and the summed
    weight under the strategy's ``weighted_by_key``. Clients' train metrics stay on the clients.
    Evaluation goes through the strategy unchanged."""

    def __init__(self, strategy, num_shares=None, reconstruction_threshold=None, **options) -> None:
        name = type(strategy).__name__
        if name in PER_CLIENT_STRATEGIES:
            raise ConfigurationError(f"{name} needs every client's update; under secure aggregation the "
                                     "server sees only their sum. Use an averaging strategy")
        super().__init__(num_shares, reconstruction_threshold, **options)
        self.strategy = strategy

    def __getattr__(self, name):
        return getattr(self.strategy, name)

    def start(self, grid, initial_arrays, num_rounds: int = 3, timeout: float = 3600, **kwargs):
        if self.timeout is None:
            self.timeout = timeout
        return self.strategy.start(_SecureGrid(grid, self), initial_arrays, num_rounds, timeout, **kwargs)


class _SecureGrid:
    """The grid the wrapped strategy sees: train messages become one secure round."""

    def __init__(self, grid, secure: SecAggStrategy) -> None:
        self._grid = grid
        self._secure = secure

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable, *, timeout: float | None = None):
        from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
        from flwr.app.message_type import MessageType

        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return self._grid.send_and_receive(messages, timeout=timeout)
        round_ = _server_round(messages[0], len(self._secure.outcomes) + 1)
        contents = {m.metadata.dst_node_id: m.content for m in messages}
        records = list(messages[0].content.array_records.values())
        if len(records) != 1:
            raise ConfigurationError(f"round {round_}: the strategy's train message has {len(records)} "
                                     "ArrayRecords; secure aggregation expects the one global model")
        key = getattr(self._secure.strategy, "weighted_by_key", "num-examples")
        outcome = self._secure.run(self._grid, round_, contents, records[0].to_numpy_ndarrays(),
                                   message_api=True, weight_key=key)
        if outcome.aborted is not None:
            return []
        reply = Message(RecordDict({"arrays": ArrayRecord(outcome.arrays),
                                    "metrics": MetricRecord({key: float(outcome.total_weight)})}),
                        reply_to=_as_sent(messages[0]))
        return [reply]


def _server_round(message, default: int) -> int:
    """The strategy's round: its train config's ``server-round`` (FedAvg and relatives inject it)."""
    for record in message.content.config_records.values():
        value = record.get("server-round")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    group = message.metadata.group_id
    return int(group) if group.isdigit() else default


def _as_sent(message):
    """A reply needs its instruction's message id, which Flower assigns when it sends; the
    strategy's own instruction never went out (the secure round's messages did)."""
    if not message.metadata.message_id:
        message.metadata.__dict__["_message_id"] = message.object_id
    return message
