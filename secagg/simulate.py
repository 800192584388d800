"""In-process simulation: n clients and a server, every message through the wire codec.

The simulator is a thin driver, like any transport: it moves encoded frames between the sans-IO
state machines, makes the clients on a dropout schedule go silent, and tells the server a phase's
deadline has passed (``close_phase``) when the silent clients have not answered.

Memory stays O(d + n*k): each client's input is made just before its MaskedInputRequest is
delivered, folded into the reference sums, masked, sent and forgotten; the server accumulates.

``seed`` fixes the test data (inputs, which clients drop). Protocol secrets come from the OS CSPRNG
unless ``insecure_deterministic`` is given, which derives every party's randomness from it: for
tests and transcript vectors only.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from secagg.codec import encode, peek_type
from secagg.config import RoundConfig
from secagg.crypto import shamir
from secagg.crypto.randomness import DeterministicRandom, RandomSource, system_random
from secagg.errors import ConfigurationError, RoundAborted
from secagg.messages import MaskedInputRequest, Message
from secagg.protocol.client import Client
from secagg.protocol.server import RoundResult, Server
from secagg.protocol.states import Phase
from secagg.quantize import ring_dtype, ring_mask


class Stage(str, Enum):
    """Where a client goes silent: it never sends this stage's message nor any later one."""

    ADVERTISE_KEYS = "advertise"  # before AdvertiseKeys
    SHARE_KEYS = "share"  # after AdvertiseKeys, before ShareKeys
    MASKED_INPUT = "masked"  # after ShareKeys, before MaskedInput
    UNMASK = "unmask"  # after MaskedInput, before (during) Unmask


STAGE_ORDER = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK]
_PHASE_STAGE = {
    Phase.ADVERTISE_KEYS: Stage.ADVERTISE_KEYS,
    Phase.SHARE_KEYS: Stage.SHARE_KEYS,
    Phase.MASKED_INPUT: Stage.MASKED_INPUT,
    Phase.UNMASK: Stage.UNMASK,
}
DROP_STAGE_CHOICES = [s.value for s in STAGE_ORDER] + ["mixed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationReport:
    clients: int
    dim: int
    bits: int
    degree: int
    threshold: int
    dropout: float
    dropped: int  # clients that went silent, at any stage
    survivors: int  # clients whose masked input is in the sum (U3)
    dropped_by_stage: dict[str, list[int]]
    aborted: bool
    abort_reason: str | None
    unrecoverable: list[int]
    exact: bool | None
    max_abs_error: float | None
    # Without the privacy layer: a hard bound on |decoded - true| per coordinate (rounding).
    error_bound: float | None
    client_seconds_median: float
    client_seconds_max: float
    server_seconds: float
    phase_seconds: dict[str, dict[str, float]]
    bytes_sent_per_client: int
    bytes_received_per_client: int
    masked_input_bytes: int  # one MaskedInput frame: ceil(d * b / 8) plus a small header
    client_mask_expansions_median: int  # d-word masks a client expands (1 + its live neighbours)
    server_mask_expansions: int  # d-word masks the server expands to unmask the sum
    # Privacy layer (``privacy=`` given): the checks on the aggregate and what they decided.
    dp: dict | None = None
    checks: list[dict] | None = None
    rejected: bool = False
    reject_reasons: list[str] = field(default_factory=list)
    # With the privacy layer: one standard deviation of a decoded coordinate's error (noise and
    # rounding), not a bound; max_abs_error over d coordinates is typically a few of these.
    error_std: float | None = None
    malicious: list[int] = field(default_factory=list)
    result: RoundResult | None = field(default=None, repr=False, compare=False)
    aggregate: object | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("result", "aggregate")}

    def summary(self) -> str:
        lines = [
            f"SecAgg+ round: {self.clients} clients, dim {self.dim}, ring Z_2^{self.bits}, "
            f"degree {self.degree}, threshold {self.threshold}",
            f"  dropped out: {self.dropped} (by stage: "
            f"{', '.join(f'{k} {len(v)}' for k, v in self.dropped_by_stage.items() if v) or 'none'}); "
            f"inputs in the sum: {self.survivors}",
        ]
        if self.aborted:
            lines.append(f"  ABORTED: {self.abort_reason}")
        else:
            figure = (f"one standard deviation of the noise per coordinate {self.error_std:.3g}"
                      if self.dp else f"quantisation bound {self.error_bound:.3g}")
            lines.append(
                f"  sum exact in the ring: {'yes' if self.exact else 'NO'}; max |decoded - true| = "
                f"{self.max_abs_error:.3g} ({figure})"
            )
        if self.dp:
            count = ("not counted (flag weight 0)" if self.dp["clipped_count"] is None else
                     f"(noised) {self.dp['clipped_count']:.1f} +- {self.dp['clipped_count_std']:.1f}")
            lines.append(
                f"  privacy: {self.dp['mechanism']}, clip {self.dp['clip']}, noise multiplier "
                f"{self.dp['noise_multiplier']}, m_min {self.dp['min_clients']}: epsilon "
                f"{self.dp['epsilon']:.4g} at delta {self.dp['delta']} for this round "
                f"({self.dp['accountant']}); clipped clients {count} (true {self.dp['clipped_true']})"
            )
        if self.malicious:
            lines.append(f"  malicious clients ({self.dp.get('attack')}): {self.malicious}")
        for c in self.checks or []:
            mark = "pass" if c["passed"] else ("REJECT" if c["policy"] == "reject" else "WARN")
            lines.append(f"    check {c['name']:<16} {mark:<6} value {c['value']:.4g}  bound {c['bound']:.4g}")
        if self.rejected:
            lines.append("  AGGREGATE REJECTED: " + "; ".join(self.reject_reasons))
        lines.append(
            f"  client time median {self.client_seconds_median * 1e3:.2f} ms (max "
            f"{self.client_seconds_max * 1e3:.2f} ms); server time {self.server_seconds:.3f} s"
        )
        lines.append(
            f"  bytes per surviving client: sent {self.bytes_sent_per_client:,}, received "
            f"{self.bytes_received_per_client:,}"
        )
        for phase, t in self.phase_seconds.items():
            lines.append(
                f"    {phase:<14} server {t['server']:.4f} s, clients total {t['clients']:.4f} s"
            )
        return "\n".join(lines)


def dropout_schedule(
    clients: int, dropout: float, drop_stage: str, seed: int | None
) -> dict[int, Stage]:
    """Choose round(dropout * n) clients at random and the stage at which each goes silent."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigurationError(f"dropout must lie in [0, 1), got {dropout}")
    if drop_stage not in DROP_STAGE_CHOICES:
        raise ConfigurationError(f"drop stage must be one of {DROP_STAGE_CHOICES}, got {drop_stage!r}")
    gen = np.random.default_rng(seed)
    count = int(round(dropout * clients))
    chosen = sorted(int(c) for c in gen.choice(np.arange(1, clients + 1), size=count, replace=False))
    if drop_stage == "mixed":
        stages = gen.integers(0, len(STAGE_ORDER), size=count)
        return {c: STAGE_ORDER[s] for c, s in zip(chosen, stages)}
    return {c: Stage(drop_stage) for c in chosen}


def make_input(seed: int | None, client: int, dim: int, value_range: float) -> np.ndarray:
    """Test data for one client: uniform in [-R, R], reproducible from (seed, client)."""
    gen = np.random.default_rng(None if seed is None else [seed, client])
    return gen.uniform(-value_range, value_range, dim)


def _accounting_fields(acc) -> dict:
    return {"epsilon": acc.epsilon, "accountant": acc.accountant, "rdp_epsilon": acc.rdp_epsilon}


def simulate(
    clients: int,
    dim: int,
    *,
    dropout: float = 0.0,
    drop_stage: str = Stage.MASKED_INPUT.value,
    schedule: Mapping[int, Stage | str] | None = None,
    bits: int = 32,
    value_range: float = 1.0,
    levels: int | None = None,
    adversarial_rate: float = 0.05,
    dropout_rate: float | None = None,
    adversary: str = "semi-honest",
    full_graph: bool = False,
    threshold: int | None = None,
    seed: int | None = None,
    inputs: Callable[[int], np.ndarray] | None = None,
    raise_on_abort: bool = False,
    progress: bool = False,
    insecure_deterministic: str | None = None,
    transcript: list[tuple[str, int, int, bytes]] | None = None,
    privacy=None,
    malicious: int = 0,
    attack: str | None = None,
    checks=None,
    delta: float = 1e-6,
) -> SimulationReport:
    """Run one round in process. Returns a report; raises ``RoundAborted`` only if asked to.

    ``schedule`` (client -> stage) overrides ``dropout``/``drop_stage``. ``inputs(client)`` overrides
    the generated test data. ``dropout_rate`` is what the parameter finder plans for (default:
    ``max(dropout, 0.05)``). ``transcript``, if given, receives every frame as
    (direction, sender, recipient, bytes).

    ``privacy`` (a ``secagg.privacy.DPPlan``) runs the round through the privacy layer: clients
    clip, round and noise with a ``DPEncoder``, the server decodes with a ``DPDecoder`` and runs
    ``checks`` (default ``PlausibilityChecks(privacy)``). ``malicious`` clients then mount
    ``attack``: ``scale`` (x100, no clipping), ``noise`` (N(0, 10^2) per coordinate, no clipping)
    or ``signflip`` (the negated update, clipped like an honest one).
    """
    if insecure_deterministic is not None:
        root = DeterministicRandom(insecure_deterministic)
        rng_for: Callable[[str], RandomSource] = root.fork
    else:
        rng_for = lambda _label: system_random  # noqa: E731
    if schedule is None:
        schedule = dropout_schedule(clients, dropout, drop_stage, seed)
    schedule = {int(c): Stage(s) for c, s in schedule.items()}
    if privacy is not None:
        dim, bits, levels = privacy.ring_dim, privacy.bits, 0
    elif malicious or attack:
        raise ConfigurationError("attacks are simulated on the privacy layer: pass privacy=DPPlan(...)")
    config = RoundConfig.create(
        clients, dim, bits=bits, value_range=value_range, levels=levels,
        adversarial_rate=adversarial_rate,
        dropout_rate=max(dropout, 0.05) if dropout_rate is None else dropout_rate,
        adversary=adversary, full_graph=full_graph, threshold=threshold,
        rng=rng_for("config"),
    )
    attackers: list[int] = []
    if privacy is not None:
        from secagg.privacy.simulation import attack_encoders, make_update

        make = inputs or (lambda c: make_update(seed, c, privacy))
        encoders, attackers = attack_encoders(privacy, clients, malicious, attack, seed, rng_for)
    else:
        make = inputs or (lambda c: make_input(seed, c, dim, value_range))
        encoders = {}

    server_time = 0.0
    client_time: dict[int, float] = defaultdict(float)
    sent: dict[int, int] = defaultdict(int)
    received: dict[int, int] = defaultdict(int)
    phase_seconds: dict[str, dict[str, float]] = {}
    true_ring = np.zeros(config.dim, dtype=ring_dtype(config.bits))
    true_sum = np.zeros(privacy.dim if privacy is not None else dim, dtype=np.float64)
    contributed: set[int] = set()
    masked_input_bytes = [0]

    def record(direction: str, sender: int, recipient: int, frame: bytes) -> None:
        if transcript is not None:
            transcript.append((direction, sender, recipient, frame))

    shamir.warm_up()  # galois compiles its kernels once per process; not a per-round cost
    started = time.perf_counter()
    server = Server(config, rng=rng_for("server"))
    parties = {c: Client(c, rng=rng_for(f"client {c}"), encoder=encoders.get(c)) for c in config.clients}
    outbox = [(m.recipient, encode(m)) for m in server.start()]
    server_time += time.perf_counter() - started
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=4 * clients, unit="msg", desc="round", leave=False)

    def server_send(messages: list[Message]) -> list[tuple[int, bytes]]:
        frames = [(m.recipient, encode(m)) for m in messages]
        for r, f in frames:
            record("server->client", 0, r, f)
        return frames

    for r, f in outbox:
        record("server->client", 0, r, f)

    def silent(client: int, phase: Phase) -> bool:
        drop = schedule.get(client)
        return drop is not None and STAGE_ORDER.index(drop) <= STAGE_ORDER.index(_PHASE_STAGE[phase])

    while not server.finished:
        phase = server.phase
        phase_server, phase_clients = 0.0, 0.0
        pending, outbox = outbox, []
        for recipient, frame in pending:
            received[recipient] += len(frame)
            client = parties[recipient]
            if silent(recipient, phase) or client.finished:
                continue
            x = None
            if peek_type(frame) is MaskedInputRequest:
                x = np.asarray(make(recipient))  # the client's training, not protocol cost
            t0 = time.perf_counter()
            if x is not None:
                client.provide_input(x)
                q = client.quantized_input
            replies = [encode(m) for m in client.receive_data(frame)]
            elapsed = time.perf_counter() - t0
            client_time[recipient] += elapsed
            phase_clients += elapsed
            if x is not None and replies:
                masked_input_bytes[0] = len(replies[0])
                np.add(true_ring, q, out=true_ring)
                sent_value = encoders[recipient].sent_value if privacy is not None else x
                np.add(true_sum, sent_value, out=true_sum)
                contributed.add(recipient)
            for reply in replies:
                sent[recipient] += len(reply)
                record("client->server", recipient, 0, reply)
                t0 = time.perf_counter()
                outbox += server_send(server.receive_data(recipient, reply))
                dt = time.perf_counter() - t0
                server_time += dt
                phase_server += dt
            if bar is not None:
                bar.update(1)
        if not server.finished and server.phase is phase:
            t0 = time.perf_counter()
            outbox += server_send(server.close_phase())
            dt = time.perf_counter() - t0
            server_time += dt
            phase_server += dt
        phase_seconds[phase.value] = {"server": phase_server, "clients": phase_clients}
        if server.finished:  # deliver the Abort notices of a round that just ended
            for recipient, frame in outbox:
                received[recipient] += len(frame)
                if parties[recipient].state.value not in ("Aborted", "Error") and not silent(recipient, phase):
                    parties[recipient].receive_data(frame)
    if bar is not None:
        bar.close()

    dropped_by_stage = {s.value: sorted(c for c, st in schedule.items() if st is s) for s in STAGE_ORDER}
    full_participants = [c for c in config.clients if c not in schedule] or list(config.clients)
    common = dict(
        clients=clients, dim=dim, bits=config.bits, degree=config.degree,
        threshold=config.threshold, dropout=dropout, dropped=len(schedule),
        dropped_by_stage=dropped_by_stage,
        client_seconds_median=statistics.median(client_time[c] for c in config.clients),
        client_seconds_max=max(client_time.values(), default=0.0),
        server_seconds=server_time, phase_seconds=phase_seconds,
        bytes_sent_per_client=int(statistics.median(sent[c] for c in full_participants)),
        bytes_received_per_client=int(statistics.median(received[c] for c in full_participants)),
        masked_input_bytes=masked_input_bytes[0],
        client_mask_expansions_median=int(statistics.median(
            parties[c].mask_expansions for c in config.clients if c in contributed) if contributed else 0),
    )
    try:
        result = server.result()
    except RoundAborted as exc:
        if raise_on_abort:
            raise
        return SimulationReport(
            **common, survivors=len(contributed), server_mask_expansions=0,
            aborted=True, abort_reason=exc.reason, unrecoverable=list(exc.unrecoverable),
            exact=None, max_abs_error=None, error_bound=None,
        )
    if set(result.contributors) != contributed:
        raise AssertionError("server and driver disagree on who contributed")  # a bug, not input
    exact = bool(np.array_equal(result.ring_sum, true_ring & true_ring.dtype.type(ring_mask(bits))))
    m = len(result.contributors)
    extra: dict = {}
    if privacy is not None:
        from secagg.privacy import DPDecoder, PlausibilityChecks

        aggregate = DPDecoder(privacy).decode(result.ring_sum, m)
        decoded = aggregate.flat
        report = (checks or PlausibilityChecks(privacy)).run(aggregate)
        # Noise and rounding: per-coordinate standard deviation of the decoded sum (rounding's
        # variance is at most 1/4 per client and coordinate).
        error_bound = None
        extra = dict(
            error_std=math.sqrt(m * (privacy.local_variance + 0.25)) * privacy.gamma,
            dp={"mechanism": privacy.mechanism.value, "clip": privacy.clip,
                "noise_multiplier": privacy.noise_multiplier, "min_clients": privacy.min_clients,
                "bits": privacy.bits, "gamma": privacy.gamma, "delta": delta,
                **_accounting_fields(privacy.accounting(rounds=1, delta=delta)),
                "flag_weight": privacy.flag_weight,
                "clipped_count": aggregate.clipped_count,
                "clipped_count_std": privacy.clip_count_std(m),
                "clipped_true": sum(bool(encoders[c].clipped) for c in result.contributors),
                "attack": attack},
            checks=report.as_list(), rejected=report.rejected, reject_reasons=report.reasons,
            malicious=attackers, aggregate=None if report.rejected else aggregate,
        )
    else:
        decoded = result.values
        # Each client's rounding error is below one step: a hard bound on the decoded error.
        error_bound = m * config.quantizer.step
    return SimulationReport(
        **common, survivors=m, server_mask_expansions=result.mask_expansions,
        aborted=False, abort_reason=None, unrecoverable=[], exact=exact,
        max_abs_error=float(np.max(np.abs(decoded - true_sum), initial=0.0)),
        error_bound=error_bound, result=result, **extra,
    )
