"""A simulated round's report: what happened, whether the sum is exact, what it cost.

It is built from public results only: the server's ``RoundResult`` or ``RoundAborted``, its
``excluded`` and ``ignored`` records, the router's timings and byte counts, and the reference sums
the scenario's recorder kept.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from secagg.codec import encode
from secagg.errors import RoundAborted
from secagg.messages import MaskedInput
from secagg.protocol.rounds import STAGE_ORDER
from secagg.protocol.server import RoundResult
from secagg.quantize import ring_dtype


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationReport:
    clients: int
    dim: int
    bits: int
    degree: int
    threshold: int
    adversary: str  # the class (k, t) were planned against
    authenticated: bool
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
    malicious: list[int] = field(default_factory=list)
    # With the privacy layer: one standard deviation of a decoded coordinate's error (noise and
    # rounding), not a bound; max_abs_error over d coordinates is typically a few of these.
    error_std: float | None = None
    # Faults: clients the server excluded (and why), frames it ignored, clients that refused.
    excluded: dict[int, str] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    refusals: dict[int, str] = field(default_factory=dict)
    network: dict[str, int] = field(default_factory=dict)
    # Clients with privacy budgets: what they report (not secret), summarised (BudgetSummary.as_dict).
    budgets: dict | None = None
    # Clients on a process pool (secagg.sim.pool): how many workers, and each one's peak RSS.
    client_workers: int = 0
    worker_peak_rss_bytes: list[int] = field(default_factory=list)
    result: RoundResult | None = field(default=None, repr=False, compare=False)
    aggregate: object | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("result", "aggregate")}

    def summary(self) -> str:
        lines = [
            f"SecAgg+ round: {self.clients} clients, dim {self.dim}, ring Z_2^{self.bits}, "
            f"degree {self.degree}, threshold {self.threshold} (against a {self.adversary} server"
            + ("; authenticated)" if self.authenticated else ")"),
            f"  dropped out: {self.dropped} (by stage: "
            f"{', '.join(f'{k} {len(v)}' for k, v in self.dropped_by_stage.items() if v) or 'none'}); "
            f"inputs in the sum: {self.survivors}",
        ]
        if self.aborted:
            lines.append(f"  ABORTED: {self.abort_reason}")
        elif self.exact is None:
            lines.append("  sum: the reference sum is unknown for this set of contributors")
        else:
            figure = (f"one standard deviation of the noise per coordinate {self.error_std:.3g}"
                      if self.error_std is not None else f"quantisation bound {self.error_bound:.3g}")
            lines.append(
                f"  sum exact in the ring: {'yes' if self.exact else 'NO'}; max |decoded - true| = "
                f"{self.max_abs_error:.3g} ({figure})"
            )
        for c, why in sorted(self.excluded.items()):
            lines.append(f"  excluded client {c}: {why}")
        for c, why in sorted(self.refusals.items()):
            lines.append(f"  client {c} refused: {why}")
        if self.ignored:
            lines.append("  frames ignored by the server: "
                         + ", ".join(f"{k} {v}" for k, v in self.ignored.items()))
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
        if self.budgets:
            b = self.budgets
            lines.append(
                f"  privacy budgets: {b['exhausted']} of {b['clients']} clients exhausted; epsilon spent "
                f"min {b['epsilon_min']:.4g}, median {b['epsilon_median']:.4g}, max {b['epsilon_max']:.4g}"
                + (f" at delta {b['delta']}" if b["delta"] else "")
            )
        for c in self.checks or []:
            mark = "pass" if c["passed"] else ("REJECT" if c["policy"] == "reject" else "WARN")
            lines.append(f"    check {c['name']:<16} {mark:<6} value {c['value']:.4g}  bound {c['bound']:.4g}")
        if self.rejected:
            lines.append("  AGGREGATE REJECTED: " + "; ".join(self.reject_reasons))
        lines.append(
            f"  client time median {self.client_seconds_median * 1e3:.2f} ms (max "
            f"{self.client_seconds_max * 1e3:.2f} ms); server time {self.server_seconds:.3f} s"
        )
        if self.client_workers:
            lines.append(f"  clients on {self.client_workers} worker processes, peak RSS up to "
                         f"{max(self.worker_peak_rss_bytes) / 2**20:,.0f} MiB each")
        lines.append(
            f"  bytes per surviving client: sent {self.bytes_sent_per_client:,}, received "
            f"{self.bytes_received_per_client:,}"
        )
        for phase, t in self.phase_seconds.items():
            lines.append(
                f"    {phase:<14} server {t['server']:.4f} s, clients total {t['clients']:.4f} s"
            )
        return "\n".join(lines)




def _budgets(budgets) -> dict | None:
    """The population's budget state, from each client's own report of its budget."""
    if not budgets:
        return None
    from secagg.privacy.budget import population_budget

    return population_budget(b.report() for _, b in sorted(budgets.items())).as_dict()


def build_report(*, config, server, router, mask_expansions, recorder, schedule, dropout, raise_on_abort,
                 privacy, encoders, attackers, attack, checks, delta, budgets=None,
                 worker_peak_rss=()) -> SimulationReport:
    clients = config.num_clients
    dropped_by_stage = {s.value: sorted(c for c, st in schedule.items() if st is s) for s in STAGE_ORDER}
    full = [c for c in config.clients if c not in schedule] or list(config.clients)
    expansions = [e for e in mask_expansions if e]
    sample = MaskedInput(session_id=config.session_id, round=config.round, sender=clients,
                         bits=config.bits, masked=np.zeros(config.dim, dtype=ring_dtype(config.bits)))
    common = dict(
        clients=clients, dim=recorder.values.size if privacy is None else privacy.dim,
        bits=config.bits, degree=config.degree, threshold=config.threshold,
        adversary=config.adversary.value, authenticated=config.authenticated, dropout=dropout,
        dropped=len(schedule), dropped_by_stage=dropped_by_stage,
        client_seconds_median=statistics.median(router.seconds.get(c, 0.0) for c in config.clients),
        client_seconds_max=max((router.seconds.get(c, 0.0) for c in config.clients), default=0.0),
        server_seconds=router.seconds.get(0, 0.0), phase_seconds=router.phase_seconds,
        bytes_sent_per_client=int(statistics.median(router.bytes_sent.get(c, 0) for c in full)),
        bytes_received_per_client=int(statistics.median(router.bytes_received.get(c, 0) for c in full)),
        masked_input_bytes=len(encode(sample)),
        client_mask_expansions_median=int(statistics.median(expansions)) if expansions else 0,
        excluded={c: str(e) for c, e in sorted(server.excluded.items())},
        ignored=server.ignored.as_dict(),
        refusals={c: str(e) for c, e in sorted(router.refusals.items())},
        network=dict(router.counts),
        budgets=_budgets(budgets),
        client_workers=len(worker_peak_rss), worker_peak_rss_bytes=list(worker_peak_rss),
    )
    try:
        result = server.result()
    except RoundAborted as exc:
        if raise_on_abort:
            raise
        return SimulationReport(
            **common, survivors=len(recorder.encoded), server_mask_expansions=0, aborted=True, abort_reason=exc.reason,
            unrecoverable=list(exc.unrecoverable), exact=None, max_abs_error=None, error_bound=None,
        )
    m = len(result.contributors)
    truth = recorder.truth(result.contributors)
    extra: dict = {}
    error_bound = error_std = None
    if privacy is not None:
        from secagg.privacy import DPDecoder, PlausibilityChecks

        aggregate = DPDecoder(privacy).decode(result.ring_sum, m)
        decoded = aggregate.flat
        report = (checks or PlausibilityChecks(privacy)).run(aggregate)
        # Noise and rounding: per-coordinate standard deviation of the decoded sum (rounding's
        # variance is at most 1/4 per client and coordinate).
        error_std = math.sqrt(privacy.error_proxy(m))
        acc = privacy.accounting(rounds=1, delta=delta)
        extra = dict(
            dp={"mechanism": privacy.mechanism.value, "clip": privacy.clip,
                "noise_multiplier": privacy.noise_multiplier, "min_clients": privacy.min_clients,
                "bits": privacy.bits, "gamma": privacy.gamma, "delta": delta,
                "epsilon": acc.epsilon, "accountant": acc.accountant, "rdp_epsilon": acc.rdp_epsilon,
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
    exact = max_abs_error = None
    if truth is not None:
        exact = bool(np.array_equal(result.ring_sum, truth[0]))
        max_abs_error = float(np.max(np.abs(decoded - truth[1]), initial=0.0))
    return SimulationReport(
        **common, survivors=m, server_mask_expansions=result.mask_expansions,
        aborted=False, abort_reason=None, unrecoverable=[], exact=exact,
        max_abs_error=max_abs_error, error_bound=error_bound, error_std=error_std,
        result=result, **extra,
    )
