"""One simulated round of group-wise secure sums with a robust combination (``secagg simulate
--groups G --robust METHOD``).

Each of the g groups (``groups.assign_groups`` from the round's public seed) runs its own SecAgg+
instance through ``secagg.simulate``: its own (k, t) from the parameter finder for its size, its
own DP plan (m_min is the group's size less its planned dropouts, so each group sum carries the
noise the guarantee needs), its own checks on its aggregate. A group that aborts or whose
aggregate a check rejects contributes nothing; the rest are combined by ``combine.combine``.

With attackers, ``error_inflation`` compares the L2 error of the released mean (against the mean
of the honest clients' clipped inputs) with the error of the same round (the same masks, noise,
groups and dropouts: every random stream is forked from one label) in which the attackers behave
honestly. An attack is neutralised when its inflation is at most 1.5.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.robust.combine import METHODS, Combined, combine
from secagg.robust.groups import SEED_BYTES, assign_groups
from secagg.sim.scenario import dropout_schedule

NEUTRALISED = 1.5  # error inflation at or below which an attack counts as neutralised
# A group this small runs original SecAgg (the full graph, t = 2/3 of its peers): it costs little
# at this size, and the finder's sparse graph is planned for exactly floor(rate * n) dropouts,
# which a small group drawn from a larger round often exceeds.
FULL_GRAPH_UP_TO = 40
GROUP_DROPOUT_TAIL = 1e-3


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupedReport:
    clients: int
    dim: int
    groups: int
    robust: str
    dropout: float
    group_reports: list[dict]  # per group: size, contributors, (k, t), aborted/rejected and why, epsilon
    combined: dict | None  # Combined.as_dict(): groups used, flagged, deviations and bounds
    aborted: bool
    abort_reason: str | None
    error: float | None  # L2 error of the released mean against the honest clients' mean
    honest_error: float | None = None  # the same round with the attackers behaving honestly
    error_inflation: float | None = None
    neutralised: bool | None = None
    malicious: list[int] = field(default_factory=list)
    attack: str | None = None
    epsilon: float | None = None  # the largest group's epsilon: each client is in one sum
    delta: float = 1e-6
    exact: bool = True  # every completed group's ring sum was exact
    mean: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "mean"}

    def summary(self) -> str:
        head = (f"{self.clients} clients in {self.groups} groups, d = {self.dim}, combiner {self.robust}, "
                f"dropout {self.dropout:.0%}")
        if self.aborted:
            return f"{head}\n  ABORTED: {self.abort_reason}"
        lines = [head]
        for g in self.group_reports:
            state = ("aborted: " + g["abort_reason"]) if g["aborted"] else (
                "rejected: " + "; ".join(g["reject_reasons"]) if g["rejected"] else "ok")
            lines.append(f"  group {g['group']}: {g['clients']} clients, {g['contributors']} in the sum, "
                         f"(k, t) = ({g['degree']}, {g['threshold']}), {state}")
        c = self.combined
        lines.append(f"  combined groups {c['used']}; flagged {c['flagged'] or 'none'}"
                     + (f"; set aside by Krum {c['set_aside']}" if c["set_aside"] else ""))
        lines.append(f"  epsilon {self.epsilon:.3g} at delta {self.delta:g} (per client: one group sum)"
                     if self.epsilon is not None else "  no DP")
        lines.append(f"  L2 error of the released mean vs the honest clients' mean: {self.error:.4g}")
        if self.error_inflation is not None:
            lines.append(f"  attack {self.attack} by {len(self.malicious)} client(s): error inflation "
                         f"{self.error_inflation:.3f} ({'neutralised' if self.neutralised else 'NOT neutralised'}, "
                         f"threshold {NEUTRALISED})")
        return "\n".join(lines)


def simulate_groups(clients: int, dim: int, *, groups: int, robust: str = "median", dropout: float = 0.0,
                    drop_stage: str = "masked", seed: int | None = None, clip: float = 1.0,
                    noise_multiplier: float = 1.0, mechanism: str = "ddgauss", dropout_rate: float | None = None,
                    adversarial_rate: float = 0.05, malicious: int = 0, attack: str | None = None,
                    delta: float = 1e-6, false_alarm: float = 1e-6, trim: float = 0.2, rotate: bool = True,
                    inputs=None, label: str | None = None, baseline: bool = True,
                    telemetry=None, attackers=None) -> GroupedReport:
    """Run one grouped round; see the module docstring. ``inputs(client)`` overrides the test data
    (``privacy.simulation.make_update``); ``attackers`` names the malicious clients (default:
    ``malicious`` of them drawn from ``seed``); ``label`` fixes every random stream (default: 16 bytes
    from the OS CSPRNG, so masks and noise are secret; a fixed label is for reproducing a round)."""
    if robust not in METHODS:
        raise ConfigurationError(f"--robust must be one of {METHODS}, got {robust!r}")
    if attackers is not None:
        malicious = len(attackers)
    if malicious and attack is None:
        raise ConfigurationError("--malicious needs --attack")
    label = label if label is not None else os.urandom(16).hex()
    root = DeterministicRandom(label)
    members = round_groups(clients, groups, label)
    schedule = dropout_schedule(clients, dropout, drop_stage, seed)
    if attackers is None:
        gen = np.random.default_rng(None if seed is None else [seed, 99])
        attackers = gen.choice(np.arange(1, clients + 1), size=malicious, replace=False)
    attackers = sorted(int(c) for c in attackers)
    if any(not 1 <= c <= clients for c in attackers):
        raise ConfigurationError(f"attackers must be clients in 1..{clients}, got {attackers}")
    planned = dropout_rate if dropout_rate is not None else max(dropout, 0.05)
    plans = _plans(members, dim, clip=clip, noise_multiplier=noise_multiplier, mechanism=mechanism,
                   planned=planned, rotate=rotate, root=root)
    make = inputs
    if make is None:
        from secagg.privacy.simulation import make_update

        make = lambda c: make_update(seed, c, plans[0])  # noqa: E731 - depends only on dim and C
    run = dict(members=members, plans=plans, schedule=schedule, attackers=attackers, make=make,
               label=label, robust=robust, clip=clip, false_alarm=false_alarm, trim=trim,
               dropout_rate=planned, adversarial_rate=adversarial_rate, drop_stage=drop_stage)
    attacked = _run(attack=attack if attackers else None, **run)
    truth = _honest_mean(make, clients, attackers, clip)
    common = dict(clients=clients, dim=dim, groups=groups, robust=robust, dropout=dropout,
                  group_reports=attacked["groups"], malicious=attackers, attack=attack if attackers else None,
                  delta=delta, exact=attacked["exact"],
                  epsilon=max(p.accounting(rounds=1, delta=delta).epsilon for p in plans))
    if attacked["combined"] is None:
        return GroupedReport(**common, combined=None, aborted=True, abort_reason=attacked["reason"], error=None)
    error = float(np.linalg.norm(attacked["combined"].mean - truth))
    extra = {}
    if attackers and baseline:
        honest = _run(attack=None, **run)
        if honest["combined"] is not None:
            honest_error = float(np.linalg.norm(honest["combined"].mean - truth))
            inflation = error / honest_error if honest_error > 0 else math.inf
            extra = dict(honest_error=honest_error, error_inflation=inflation, neutralised=inflation <= NEUTRALISED)
    if telemetry is not None:
        telemetry.observe_groups(attacked["combined"],
                                 rejected=[g["group"] for g in attacked["groups"] if g["rejected"]])
    return GroupedReport(**common, combined=attacked["combined"].as_dict(), aborted=False, abort_reason=None,
                         error=error, mean=attacked["combined"].mean, **extra)


def round_groups(clients: int, groups: int, label: str) -> list[list[int]]:
    """The groups ``simulate_groups(..., label=label)`` forms: public, from the round's group seed."""
    return assign_groups(clients, groups, DeterministicRandom(label).fork("group seed")(SEED_BYTES))


def _plans(members, dim, *, clip, noise_multiplier, mechanism, planned, rotate, root):
    from secagg.privacy import DPPlan

    from scipy.stats import binom

    plans = []
    for j, group in enumerate(members):
        n = len(group)
        # A group's dropouts scatter around planned * n: m_min holds unless more than the
        # (1 - GROUP_DROPOUT_TAIL) quantile of Binomial(n, planned) drop, so an honest group is
        # rarely refused by its min_contributors check (its noise is sized for m_min).
        m_min = max(1, n - int(binom.isf(GROUP_DROPOUT_TAIL, n, planned)))
        plans.append(DPPlan.create(dim, clip=clip, noise_multiplier=noise_multiplier, min_clients=m_min,
                                   max_clients=n, mechanism=mechanism, rotate=rotate,
                                   rotation_seed=root.fork("rotation", j)(32)))
    return plans


def _run(*, members, plans, schedule, attackers, make, label, robust, clip, false_alarm, trim, attack,
         dropout_rate, adversarial_rate, drop_stage):
    from secagg.privacy import DPDecoder, PlausibilityChecks
    from secagg.simulate import simulate

    means, counts, noise, reports, exact = {}, {}, {}, [], True
    for j, group in enumerate(members):
        local = {c: i + 1 for i, c in enumerate(group)}
        plan = plans[j]
        kwargs = dict(
            privacy=plan, checks=PlausibilityChecks(plan, false_alarm=false_alarm),
            schedule={local[c]: s for c, s in schedule.items() if c in local},
            attackers=[local[c] for c in attackers if c in local] if attack else None,
            attack=attack if attack and any(c in local for c in attackers) else None,
            inputs=lambda i, group=group: make(group[i - 1]),
            insecure_deterministic=f"{label}/group {j}", dropout_rate=dropout_rate,
            adversarial_rate=adversarial_rate, drop_stage=drop_stage,
        )
        report = simulate(len(group), plan.dim, full_graph=True if len(group) <= FULL_GRAPH_UP_TO else "auto",
                          **kwargs)
        entry = {"group": j, "clients": len(group), "contributors": report.survivors, "degree": report.degree,
                 "threshold": report.threshold, "aborted": report.aborted, "abort_reason": report.abort_reason,
                 "rejected": report.rejected, "reject_reasons": report.reject_reasons,
                 "malicious": [c for c in attackers if c in local] if attack else []}
        reports.append(entry)
        if report.aborted or report.rejected:
            continue
        exact = exact and bool(report.exact)
        m = len(report.result.contributors)
        agg = DPDecoder(plan).decode(report.result.ring_sum, m)
        means[j], counts[j], noise[j] = agg.flat / m, m, report.error_std / m
    if not means:
        reasons = "; ".join(f"group {r['group']}: " + (r["abort_reason"] or "; ".join(r["reject_reasons"]))
                            for r in reports)
        return {"groups": reports, "combined": None, "exact": exact, "reason": f"no group produced a sum ({reasons})"}
    combined: Combined = combine(means, counts, robust, clip=clip, noise_std=noise, false_alarm=false_alarm, trim=trim)
    return {"groups": reports, "combined": combined, "exact": exact, "reason": None}


def _honest_mean(make, clients: int, attackers, clip: float) -> np.ndarray:
    total, count = None, 0
    for c in range(1, clients + 1):
        if c in attackers:
            continue
        x = np.asarray(make(c), dtype=np.float64)
        norm = float(np.linalg.norm(x))
        if norm > clip:
            x = x * (clip / norm)
        total = x if total is None else total + x
        count += 1
    return total / count
