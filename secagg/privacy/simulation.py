"""Test data and attackers for simulated rounds on the privacy layer."""

from __future__ import annotations

import numpy as np

from secagg.errors import ConfigurationError
from secagg.privacy.encoder import DPEncoder, DPPlan
from secagg.privacy.noise import generator

ATTACKS = ("scale", "noise", "signflip", "unclipped")
SCALE_FACTOR = 100.0  # scale: the update times this, unclipped
NOISE_STD = 10.0  # noise: N(0, NOISE_STD^2) added to every coordinate, unclipped


def make_update(seed: int | None, client: int, plan: DPPlan) -> np.ndarray:
    """A client's update: a random direction with norm uniform in [0.5 C, 2 C].

    The clip norm is usually set below the typical update norm (as adaptive clipping does, near
    the median), so most honest clients clip."""
    gen = np.random.default_rng(None if seed is None else [seed, client, 7])
    v = gen.normal(size=plan.dim)
    return v / np.linalg.norm(v) * plan.clip * gen.uniform(0.5, 2.0)


class RecordingEncoder(DPEncoder):
    """An honest encoder that also remembers the clipped update it encoded (the simulator's
    reference sum)."""

    def encode(self, update, *, clip: bool = True) -> np.ndarray:
        x = self.flatten(update)
        norm = float(np.linalg.norm(x))
        self.sent_value = x * (self.plan.clip / norm) if clip and norm > self.plan.clip else x
        return super().encode(update, clip=clip)


class AttackEncoder(RecordingEncoder):
    """A malicious client: transforms its update and (for scale and noise) skips clipping.

    ``unclipped`` sends the client's input as it is, without clipping: the attack is whatever
    the caller's ``inputs`` gives that client (a backdoor update boosted for model replacement,
    say), by a client that does not honour the clip norm."""

    def __init__(self, plan: DPPlan, attack: str, **kw) -> None:
        super().__init__(plan, **kw)
        self.attack = attack

    def encode(self, update, *, clip: bool = True) -> np.ndarray:
        x = self.flatten(update)
        if self.attack == "scale":
            return super().encode(x * SCALE_FACTOR, clip=False)
        if self.attack == "noise":
            noise = generator(self._rng).normal(0.0, NOISE_STD, x.size)  # reproducible under a fixed rng
            return super().encode(x + noise, clip=False)
        if self.attack == "unclipped":
            return super().encode(x, clip=False)
        return super().encode(-x, clip=True)  # signflip: within the clip bound


def attack_encoders(plan: DPPlan, clients: int, malicious: int, attack: str | None, seed, rng_for,
                    chosen=None):
    """Encoders for clients 1..n: ``malicious`` of them, drawn from ``seed`` (or exactly
    ``chosen``), mount ``attack``; the rest are honest."""
    if chosen is not None:
        malicious = len(chosen)
    if malicious and attack not in ATTACKS:
        raise ConfigurationError(f"--malicious needs --attack, one of {ATTACKS}")
    if not 0 <= malicious <= clients:
        raise ConfigurationError(f"malicious clients must lie in [0, {clients}], got {malicious}")
    if chosen is not None:
        bad = sorted(int(c) for c in chosen)
        if any(not 1 <= c <= clients for c in bad):
            raise ConfigurationError(f"attackers must be clients in 1..{clients}, got {bad}")
    else:
        gen = np.random.default_rng(None if seed is None else [seed, 99])
        bad = sorted(int(c) for c in gen.choice(np.arange(1, clients + 1), size=malicious, replace=False))
    encoders = {
        c: (AttackEncoder(plan, attack, rng=rng_for(f"dp {c}")) if c in bad
            else RecordingEncoder(plan, rng=rng_for(f"dp {c}")))
        for c in range(1, clients + 1)
    }
    return encoders, bad
