"""Prometheus metrics for rounds, on an opt-in port.

Theory of operation. A :class:`Telemetry` owns its own ``CollectorRegistry`` (never
prometheus_client's global one), so several servers, or several tests, in one process keep
separate counts. A driver calls :meth:`Telemetry.observe_round` once per finished round with the
``Server``; everything is read from the server's public record afterwards (its result or
``RoundAborted``, ``peers``, ``dropped_in``, ``excluded``), so the protocol core knows nothing of
metrics and does no I/O. Nothing listens until :meth:`Telemetry.serve` is called.

Names follow the deployment runbook (DEPLOY.md, Telemetry): ``fl_round_total{status}``,
``fl_client_updates_accepted_total{client_id}``, ``fl_gradient_anomaly_detected_total{client_id,
reason}``, ``fl_byzantine_client_excluded_total{client_id}``, ``fl_model_accuracy{round}``,
``fl_client_epsilon_spent{client_id}``, ``fl_model_signature_verification_failure_total``,
``fl_privacy_budget_exhausted_total{client_id}``; and secagg's own ``secagg_phase_duration_seconds
{phase}``, ``secagg_client_dropouts_total{stage}``, ``secagg_client_refusals_total{reason}``,
``secagg_clients_pruned_total`` and
``secagg_round_aborts_total{phase,cause}``.

Under SecAgg the server never sees one client's update, so "anomaly" here means "blamed by a
protocol check": each entry of ``Server.excluded``, with the error's class name as ``reason``
(``InvalidPublicKey``, ``BadShare``, ``Equivocation``, ...), never a judgement of an update.
Every label but ``client_id`` and ``round`` takes values from a short fixed list (phase and stage
names, error class names, ``RoundAborted.cause``): an abort's free-text reason goes to the log
line, never into a label.

``fl_model_accuracy`` and ``fl_client_epsilon_spent`` are gauges the embedding pipeline sets;
``fl_model_signature_verification_failure_total`` sums the ``failures`` of every watched
``ModelGuard`` plus :meth:`Telemetry.model_signature_failed` calls.

With a logger, :meth:`observe_round` also writes one JSON line per round (``logger.info``).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterable, Mapping

from secagg.errors import (
    ConfigurationError,
    LocalProtocolError,
    ModelSignatureError,
    PrivacyBudgetExhausted,
    RoundAborted,
)
from secagg.protocol.rounds import ROUNDS, PeerState, Phase, phase_index

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import CounterMetricFamily
except ImportError:  # the `telemetry` extra is not installed
    prometheus_client = None

__all__ = ["PHASE_BUCKETS", "Telemetry", "add_arguments", "from_arguments", "hold_and_stop",
           "simulate_observer"]

# Seconds: an in-process phase takes milliseconds, an MQTT phase up to its deadline (30 s default).
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_LIVE_PHASES = {Phase(r.name).value for r in ROUNDS}


def _unavailable() -> ConfigurationError:
    return ConfigurationError("metrics need the prometheus_client package: pip install 'secagg[telemetry]'")


class Telemetry:
    """The metrics of one aggregation server (or one test), in a registry of their own."""

    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        if prometheus_client is None:
            raise _unavailable()
        self.registry = CollectorRegistry(auto_describe=True)
        self.logger = logger
        self._http = None  # (server, thread) while serving
        self._observed: weakref.WeakSet = weakref.WeakSet()
        self._guards: list = []
        self._signature_failures = 0
        r = self.registry
        self.rounds = Counter("fl_round", "Rounds that ended, by status (completed or aborted)",
                              ["status"], registry=r)
        self.updates_accepted = Counter(
            "fl_client_updates_accepted", "Rounds whose sum holds this client's update", ["client_id"], registry=r)
        self.anomalies = Counter(
            "fl_gradient_anomaly_detected",
            "Clients blamed by a protocol check (the server never sees an update): reason is the "
            "RemoteProtocolError class; or, with client_id empty, a group of a grouped round set aside "
            "(group_deviation, krum_set_aside, group_check_rejected)", ["client_id", "reason"], registry=r)
        self.excluded = Counter("fl_byzantine_client_excluded", "Clients excluded from a round for a fault",
                                ["client_id"], registry=r)
        self.model_accuracy = Gauge("fl_model_accuracy", "Model accuracy after a round (set by the pipeline)",
                                    ["round"], registry=r)
        self.epsilon_spent = Gauge("fl_client_epsilon_spent", "Privacy budget a client has spent",
                                   ["client_id"], registry=r)
        self.budget_exhausted = Counter(
            "fl_privacy_budget_exhausted", "Rounds a client sat out because its privacy budget was spent",
            ["client_id"], registry=r)
        self.phase_seconds = Histogram("secagg_phase_duration_seconds", "Time spent in each protocol phase",
                                       ["phase"], buckets=PHASE_BUCKETS, registry=r)
        self.dropouts = Counter("secagg_client_dropouts", "Clients that went silent, by the stage they "
                                "went silent in", ["stage"], registry=r)
        self.pruned = Counter("secagg_clients_pruned", "Clients told to stop: fewer than t live neighbours "
                              "left, so their secrets could not be recovered", registry=r)
        self.refusals = Counter(
            "secagg_client_refusals", "Clients that refused the server's request, by the error class "
            "they refused with (bad input, a spent privacy budget, a failed model signature)", ["reason"],
            registry=r)
        self.aborts = Counter("secagg_round_aborts", "Aborted rounds by the phase they aborted in and the "
                              "kind of reason (RoundAborted.cause)", ["phase", "cause"], registry=r)
        r.register(_SignatureFailures(self))

    # --- what a driver records -----------------------------------------------------------------

    def observe_round(self, server, *, phase_seconds: Mapping[str, float] | None = None,
                      refusals: Mapping[int, Exception] | None = None) -> dict:
        """Record a finished round of ``server`` (a ``secagg.protocol.server.Server``).

        ``phase_seconds``: phase name -> seconds, as the driver measured it (terminal phases
        are skipped). ``refusals``: client -> the error it refused with (the in-process router's
        ``refusals``, a Flower node's error reply): each counts by class, a
        ``PrivacyBudgetExhausted`` also for that client, a ``ModelSignatureError`` also as a
        signature failure. Returns the round's
        event (the JSON of the log line). Each round is recorded once."""
        if not server.finished:
            raise LocalProtocolError(f"observe_round: round {server.config.round} has not ended "
                                     f"(phase {server.phase.value})")
        if server in self._observed:
            raise LocalProtocolError(f"observe_round: round {server.config.round} was already recorded")
        self._observed.add(server)
        event = {"event": "round", "round": server.config.round, "clients": server.config.num_clients}
        try:
            result = server.result()
        except RoundAborted as exc:
            phase = exc.phase or "unknown"
            self.rounds.labels(status="aborted").inc()
            self.aborts.labels(phase=phase, cause=exc.cause).inc()
            event.update(status="aborted", phase=phase, cause=exc.cause, reason=exc.reason)
        else:
            self.rounds.labels(status="completed").inc()
            for c in result.contributors:
                self.updates_accepted.labels(client_id=str(c)).inc()
            event.update(status="completed", contributors=list(result.contributors))
        for c, error in sorted(server.excluded.items()):
            self.anomalies.labels(client_id=str(c), reason=type(error).__name__).inc()
            self.excluded.labels(client_id=str(c)).inc()
        dropped: dict[str, list[int]] = {}
        for c, state in sorted(server.peers.items()):
            if state is PeerState.DROPPED:
                stage = _stage(server.dropped_in.get(c))
                self.dropouts.labels(stage=stage).inc()
                dropped.setdefault(stage, []).append(c)
            elif state is PeerState.PRUNED:
                self.pruned.inc()
        for c, error in sorted((refusals or {}).items()):
            self.refusals.labels(reason=type(error).__name__).inc()
            if isinstance(error, ModelSignatureError):
                self.model_signature_failed()
            if isinstance(error, PrivacyBudgetExhausted):
                self.privacy_budget_exhausted(c)
        seconds = {p: float(s) for p, s in (phase_seconds or {}).items() if p in _LIVE_PHASES}
        for phase, s in seconds.items():
            self.phase_seconds.labels(phase=phase).observe(s)
        event.update(dropped=dropped, pruned=sorted(c for c, s in server.peers.items() if s is PeerState.PRUNED),
                     excluded={str(c): type(e).__name__ for c, e in sorted(server.excluded.items())},
                     phase_seconds={p: round(s, 6) for p, s in seconds.items()})
        if self.logger is not None:
            self.logger.info(json.dumps(event, sort_keys=True))
        return event

    def observe_groups(self, combined, rejected=()) -> None:
        """Record a grouped round's robust combination (``secagg.robust``): every group set aside
        counts in ``fl_gradient_anomaly_detected_total`` with the reason (``group_deviation``,
        ``krum_set_aside``, ``group_check_rejected`` for a group whose own aggregate checks
        rejected it). Groups are per round, so the label names no group and no client
        (``client_id=""``); the round's report names the groups."""
        for _, reason in sorted(combined.flagged.items()):
            self.anomalies.labels(client_id="", reason=reason).inc()
        for _ in combined.set_aside:
            self.anomalies.labels(client_id="", reason="krum_set_aside").inc()
        for _ in rejected:
            self.anomalies.labels(client_id="", reason="group_check_rejected").inc()

    def set_model_accuracy(self, round: int, accuracy: float) -> None:
        self.model_accuracy.labels(round=str(round)).set(accuracy)

    def set_epsilon_spent(self, client: int, epsilon: float) -> None:
        self.epsilon_spent.labels(client_id=str(client)).set(epsilon)

    def privacy_budget_exhausted(self, client: int) -> None:
        self.budget_exhausted.labels(client_id=str(client)).inc()

    def observe_budgets(self, states) -> None:
        """Set ``fl_client_epsilon_spent`` from what clients report about their budgets
        (``secagg.privacy.BudgetState``, e.g. ``PrivacyBudget.report()``): public numbers, no
        update. Refusals for a spent budget are counted by ``observe_round``."""
        for state in states:
            if state.client is not None:
                self.set_epsilon_spent(state.client, state.epsilon_spent)

    def watch_model_guard(self, guard) -> None:
        """Count ``guard.failures`` (a ``secagg.model_signing.ModelGuard``) in
        ``fl_model_signature_verification_failure_total``, read at every scrape."""
        self._guards.append(guard)

    def model_signature_failed(self, count: int = 1) -> None:
        """A signature check failed outside a watched ``ModelGuard`` (``verify_model`` called
        directly, a directory signature)."""
        if count < 0:
            raise LocalProtocolError(f"model_signature_failed: a counter only goes up, got {count}")
        self._signature_failures += count

    # --- the endpoint --------------------------------------------------------------------------

    def text(self) -> str:
        """The metrics in Prometheus text format, as a scrape would see them."""
        return prometheus_client.generate_latest(self.registry).decode()

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP on ``addr:port`` in a daemon thread; ``port`` 0 takes a
        free one. Returns the port. Stop with :meth:`stop` (or leave a ``with`` block)."""
        if self._http is not None:
            raise LocalProtocolError(f"metrics are already served on port {self.port}")
        try:
            self._http = prometheus_client.start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
        return self.port

    @property
    def port(self) -> int | None:
        return None if self._http is None else self._http[0].server_port

    def stop(self) -> None:
        """Stop the HTTP endpoint, if one runs; the counts stay."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stage(phase) -> str:
    """The dropout stage (``Stage`` value: advertise, share, ...) of the phase a client dropped in."""
    if phase is None or phase.value not in _LIVE_PHASES:
        return "unknown"
    return ROUNDS[phase_index(phase)].stage


class _SignatureFailures:
    """``fl_model_signature_verification_failure_total``, read from the watched guards at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = weakref.ref(telemetry)

    def describe(self) -> Iterable:
        return [CounterMetricFamily("fl_model_signature_verification_failure",
                                    "Global models a client refused: unsigned, tampered, stale or mis-signed")]

    def collect(self) -> Iterable:
        t = self._telemetry()
        total = 0 if t is None else t._signature_failures + sum(g.failures for g in t._guards)
        family = self.describe()[0]
        family.add_metric([], total)
        return [family]


# --- the command line's flags ----------------------------------------------------------------------

def add_arguments(parser) -> None:
    """``--metrics-port`` and ``--metrics-hold`` (for ``secagg simulate`` and ``secagg serve``)."""
    group = parser.add_argument_group("metrics (Prometheus; needs the telemetry extra)")
    group.add_argument("--metrics-port", type=int, default=None,
                       help="serve Prometheus metrics on 127.0.0.1:PORT/metrics while the command runs "
                            "(0: a free port, printed on stderr)")
    group.add_argument("--metrics-addr", default="127.0.0.1", help="address for --metrics-port")
    group.add_argument("--metrics-hold", type=float, default=0.0, metavar="SECONDS",
                       help="keep serving metrics this long after the last round, so a scrape sees it")


def from_arguments(args, err) -> Telemetry | None:
    """The ``Telemetry`` the flags ask for, already serving; None without ``--metrics-port``."""
    if args.metrics_port is None:
        if args.metrics_hold:
            raise ConfigurationError("--metrics-hold needs --metrics-port")
        return None
    if args.metrics_hold < 0:
        raise ConfigurationError(f"--metrics-hold must be at least 0, got {args.metrics_hold}")
    telemetry = Telemetry(logger=logging.getLogger("secagg.telemetry"))
    port = telemetry.serve(args.metrics_port, args.metrics_addr)
    print(f"secagg: metrics on http://{args.metrics_addr}:{port}/metrics", file=err, flush=True)
    return telemetry


def simulate_observer(telemetry: Telemetry | None):
    """``simulate(on_round=...)`` that records the round in ``telemetry`` (None: no observer)."""
    if telemetry is None:
        return None

    def observe(server, router) -> None:
        telemetry.observe_round(server, refusals=router.refusals, phase_seconds={
            phase: t["server"] + t["clients"] for phase, t in router.phase_seconds.items()})

    return observe


def hold_and_stop(telemetry: Telemetry | None, seconds: float, err) -> None:
    """After the last round: keep the endpoint up ``seconds`` longer, then stop it."""
    if telemetry is None:
        return
    import time

    if seconds > 0:
        print(f"secagg: holding metrics for {seconds:g} s", file=err, flush=True)
        time.sleep(seconds)
    telemetry.stop()
