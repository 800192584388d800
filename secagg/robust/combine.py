"""Robust combination of group means: what a server can do against poisoning when it sees only sums.

Theory of operation. Clients are split into g groups (``groups.assign_groups``), each group's sum
is its own secure aggregation with its own DP noise, so the server holds g group means
mu_1..mu_g and nothing finer. One poisoned client spoils only its group's mean; combining the
means robustly bounds what that group can do:

1. **Centre and deviation check.** The centre is the coordinate-wise median of the group means.
   Group j is *flagged* when ||mu_j - centre|| exceeds what an honest group can reach at the
   false-alarm rate p: its signal lies within C of the origin (every honest client clips to C,
   and a mean of clipped updates has norm <= C) and the centre's within sqrt(g) C, so the signal
   part is at most S = (1 + sqrt(g)) C; the noise, with per-coordinate std tau (that of mu_j and of
   the noisiest group combined), adds at most what ``privacy.checks.l2_norm_bound`` allows:
   ||dev||^2 <= S^2 + 2 S tau sqrt(2 x) + tau^2 (d + 2 sqrt(d x) + 2 x), x = ln(2/p), the cross
   term taken in the signal's one direction. An honest group crosses it with probability below p.
2. **Combination** over the groups that were not flagged: ``median`` (coordinate-wise),
   ``trimmed`` (coordinate-wise mean after dropping the b = max(1, floor(trim g)) largest and
   smallest values), ``krum`` (multi-Krum: the g - f groups with the smallest sum of squared
   distances to their g - f - 2 nearest neighbours, f = floor((g - 3) / 2), averaged by
   contributor count), or ``none`` (no check: the pooled mean of all groups, which is FedAvg).

The server learns the g group sums (each over at least m_min clients, each with its own noise),
which the DP accounting covers: a client's data is in one sum only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from secagg.errors import ConfigurationError
from secagg.privacy.checks import l2_norm_bound

METHODS = ("none", "median", "trimmed", "krum")


@dataclass(frozen=True, slots=True)
class Combined:
    mean: np.ndarray
    method: str
    used: tuple[int, ...]  # groups the combination drew on
    flagged: dict[int, str] = field(default_factory=dict)  # group -> why the deviation check set it aside
    set_aside: tuple[int, ...] = ()  # groups multi-Krum left out (it always leaves out f; not a detection)
    deviation: dict[int, float] = field(default_factory=dict)  # group -> ||mu_j - centre||
    bound: dict[int, float] = field(default_factory=dict)  # group -> the bound it was held to

    def as_dict(self) -> dict:
        return {"method": self.method, "used": list(self.used),
                "flagged": {str(j): why for j, why in self.flagged.items()},
                "set_aside": list(self.set_aside),
                "deviation": {str(j): round(v, 6) for j, v in self.deviation.items()},
                "bound": {str(j): round(v, 6) for j, v in self.bound.items()}}


def combine(means: dict[int, np.ndarray], counts: dict[int, int], method: str, *, clip: float,
            noise_std: dict[int, float] | None = None, false_alarm: float = 1e-6,
            trim: float = 0.2) -> Combined:
    """Combine group means (group -> mean vector) robustly; ``counts`` are contributors per group,
    ``noise_std`` the per-coordinate noise std of each group mean (0 without DP)."""
    if method not in METHODS:
        raise ConfigurationError(f"robust combiner must be one of {METHODS}, got {method!r}")
    if not means:
        raise ConfigurationError("no group produced a mean: nothing to combine")
    groups = sorted(means)
    if method == "none":
        total = sum(counts[j] for j in groups)
        return Combined(sum(means[j] * counts[j] for j in groups) / total, method, tuple(groups))
    stack = np.stack([means[j] for j in groups])
    centre = np.median(stack, axis=0)
    noise_std = noise_std or {}
    worst = max((noise_std.get(j, 0.0) for j in groups), default=0.0)
    signal = (1.0 + math.sqrt(len(groups))) * clip
    flagged, deviation, bound = {}, {}, {}
    for j in groups:
        deviation[j] = float(np.linalg.norm(means[j] - centre))
        bound[j] = l2_norm_bound(signal, math.hypot(noise_std.get(j, 0.0), worst) ** 2, stack.shape[1],
                                 false_alarm)
        if deviation[j] > bound[j]:
            flagged[j] = "group_deviation"
    kept = [j for j in groups if j not in flagged]
    if len(kept) < max(1, len(groups) // 2 + 1):
        # Most groups flagged: the check, not the groups, is what is off; combine them all.
        kept, flagged = groups, {}
    rows = np.stack([means[j] for j in kept])
    if method == "median":
        mean = np.median(rows, axis=0)
    elif method == "trimmed":
        b = max(1, math.floor(trim * len(kept))) if len(kept) >= 3 else 0
        ordered = np.sort(rows, axis=0)
        mean = ordered[b:len(kept) - b].mean(axis=0)
    else:
        mean, chosen = _multi_krum(means, counts, kept)
        return Combined(mean, method, tuple(chosen), flagged, tuple(j for j in kept if j not in chosen),
                        deviation, bound)
    return Combined(mean, method, tuple(kept), flagged, (), deviation, bound)


def _multi_krum(means, counts, kept):
    g = len(kept)
    f = max(0, (g - 3) // 2)
    if g < 3:
        total = sum(counts[j] for j in kept)
        return sum(means[j] * counts[j] for j in kept) / total, kept
    rows = np.stack([means[j] for j in kept])
    dist = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    neighbours = g - f - 2
    scores = [float(np.sort(np.delete(dist[i], i))[:neighbours].sum()) for i in range(g)]
    chosen = [kept[i] for i in np.argsort(scores, kind="stable")[: g - f]]
    total = sum(counts[j] for j in chosen)
    return sum(means[j] * counts[j] for j in chosen) / total, sorted(chosen)
