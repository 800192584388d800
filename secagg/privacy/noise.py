"""Discrete noise for distributed DP: the discrete Gaussian and the Skellam distribution.

- Discrete Gaussian N_Z(0, sigma^2): the rejection sampler of Canonne, Kamath and Steinke 2020
  (Algorithm 3): draw Y from a discrete Laplace of scale t = floor(sigma) + 1 and accept it with
  probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)). Vectorised: every coordinate still
  pending is drawn again in one array operation. The acceptance test is evaluated in float64, as
  in TensorFlow Federated's implementation; the paper's bit-exact version uses rational arithmetic.
- Skellam(mu): Poisson(mu/2) - Poisson(mu/2), variance mu (Agarwal et al. 2021). Sums of Skellam
  noise are Skellam, so m_min clients' shares add up to the central noise exactly.

Both draw from a NumPy generator that the caller seeds with 32 bytes from the OS CSPRNG every
round (``generator``); nothing here uses a fixed or time-based seed.
"""

from __future__ import annotations

import math

import numpy as np

from secagg.crypto.randomness import RandomSource, system_random


def generator(rng: RandomSource = system_random) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int.from_bytes(rng(32), "little")))


def discrete_laplace(gen: np.random.Generator, scale: float, size: int) -> np.ndarray:
    """P(Y = y) proportional to exp(-|y| / scale), on the integers."""
    p = -math.expm1(-1.0 / scale)
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    while pending.size:
        magnitude = gen.geometric(p, pending.size) - 1
        negative = gen.integers(0, 2, pending.size, dtype=np.int8).astype(bool)
        valid = ~(negative & (magnitude == 0))  # -0 would count zero twice
        out[pending[valid]] = np.where(negative[valid], -magnitude[valid], magnitude[valid])
        pending = pending[~valid]
    return out


def discrete_gaussian(gen: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    if sigma <= 0:
        return np.zeros(size, dtype=np.int64)
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    while pending.size:
        y = discrete_laplace(gen, t, pending.size)
        accept = gen.random(pending.size) < np.exp(
            -((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2)
        )
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out


def skellam(gen: np.random.Generator, variance: float, size: int) -> np.ndarray:
    if variance <= 0:
        return np.zeros(size, dtype=np.int64)
    return gen.poisson(variance / 2, size) - gen.poisson(variance / 2, size)
