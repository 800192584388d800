"""Privacy accounting for distributed discrete noise: (epsilon, delta) after T rounds.

Theory of operation. Everything is in the integer domain the clients add noise in: a client's
clipped update x (||x||_2 <= C) is scaled by 1/gamma and rounded, so its L2 sensitivity is the
inflated norm bound of conditional stochastic rounding (Kairouz et al. 2021, Prop. 22)

    Delta_2 = min(C/gamma + sqrt(D),  sqrt(C^2/gamma^2 + D/4 + sqrt(2 ln(1/beta)) (C/gamma + sqrt(D)/2)))

(plus one for the clipped-flag coordinate) and Delta_1 = Delta_2 * min(sqrt(D), Delta_2). Each of
the m_min clients the server must wait for adds noise of variance sigma_c^2 = (z C / gamma)^2 / m_min,
so the guarantee holds however many clients drop, down to m_min.

Per round (Renyi DP at integer orders alpha):
- distributed discrete Gaussian, Kairouz et al. 2021, Prop. 14 with Thm. 1:
  eps(alpha) = min(alpha/2 L2^2 + tau D,  alpha/2 (L2^2 + 2 L1 tau + tau^2 D),  alpha/2 (L2 + sqrt(D) tau)^2)
  with L_p = Delta_p / (sqrt(m) sigma_c) and tau = 10 sum_{k=1}^{m-1} exp(-2 pi^2 sigma_c^2 k / (k+1));
- Skellam, Agarwal et al. 2021, Cor. 4.1, with central variance mu = m sigma_c^2:
  eps(alpha) = alpha Delta_2^2 / (2 mu) + min(((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 mu^2), 3 Delta_1 / (2 mu)).

Sampling: with Poisson client sampling rate q < 1, the general subsampled-RDP upper bound of Zhu
and Wang 2019 (Thm. 5, valid for any mechanism) is applied at each integer order. T rounds add.
The RDP curve is converted to (epsilon, delta) by dp-accounting's RDP accountant conversion; the
continuous Gaussian baseline comes from dp-accounting's own RdpAccountant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import special

from secagg.errors import ConfigurationError

ORDERS = np.arange(2, 257)
DEFAULT_BETA = math.exp(-0.5)


class Mechanism(str, Enum):
    DISTRIBUTED_DISCRETE_GAUSSIAN = "ddgauss"
    SKELLAM = "skellam"


def inflated_l2(clip: float, gamma: float, dim: int, beta: float = DEFAULT_BETA) -> float:
    """L2 norm bound (integer units) of a clipped, scaled, conditionally rounded vector."""
    c = clip / gamma
    bound_1 = c + math.sqrt(dim)
    if beta == 0:
        return bound_1
    bound_2 = math.sqrt(c * c + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(dim) / 2))
    return min(bound_1, bound_2)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundMechanism:
    """One round's noise, in integer units, as the accountant needs it."""

    mechanism: Mechanism
    l2_sensitivity: float
    l1_sensitivity: float
    local_variance: float  # sigma_c^2 per client
    noise_clients: int  # m_min: the clients whose noise is counted
    dim: int  # coordinates that carry noise

    def rdp(self, orders: np.ndarray = ORDERS) -> np.ndarray:
        a = orders.astype(np.float64)
        if self.local_variance <= 0:
            return np.full(a.shape, np.inf)
        m, d = self.noise_clients, self.dim
        d2, d1 = self.l2_sensitivity, self.l1_sensitivity
        if self.mechanism is Mechanism.SKELLAM:
            mu = m * self.local_variance
            return a * d2**2 / (2 * mu) + np.minimum(
                ((2 * a - 1) * d2**2 + 6 * d1) / (4 * mu**2), 3 * d1 / (2 * mu)
            )
        sigma2 = self.local_variance
        k = np.arange(1, m)
        tau = 10 * float(np.sum(np.exp(-2 * math.pi**2 * sigma2 * k / (k + 1))))
        l2 = d2 / math.sqrt(m * sigma2)
        l1 = d1 / math.sqrt(m * sigma2)
        return np.minimum.reduce([
            a / 2 * l2**2 + tau * d,
            a / 2 * (l2**2 + 2 * l1 * tau + tau**2 * d),
            a / 2 * (l2 + math.sqrt(d) * tau) ** 2,
        ])


def subsampled_rdp(rdp: np.ndarray, q: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """Zhu and Wang 2019, Thm. 5: Poisson subsampling at rate q, any mechanism, integer orders."""
    if q >= 1:
        return rdp
    if q <= 0:
        return np.zeros_like(rdp)
    eps = dict(zip(orders.tolist(), rdp.tolist()))
    out = np.empty_like(rdp)
    for i, alpha in enumerate(orders.tolist()):
        if not np.isfinite(eps[alpha]):
            out[i] = np.inf
            continue
        terms = [math.log((1 - q) ** (alpha - 1) * (alpha * q - q + 1)),
                 math.log(special.comb(alpha, 2)) + 2 * math.log(q) + (alpha - 2) * math.log1p(-q) + eps[2]]
        for ell in range(3, alpha + 1):
            terms.append(math.log(3) + float(special.gammaln(alpha + 1) - special.gammaln(ell + 1)
                                             - special.gammaln(alpha - ell + 1))
                         + (alpha - ell) * math.log1p(-q) + ell * math.log(q) + (ell - 1) * eps[ell])
        out[i] = min(float(special.logsumexp(terms)) / (alpha - 1), eps[alpha])
    return out


def rdp_to_epsilon(rdp: np.ndarray, delta: float, orders: np.ndarray = ORDERS) -> float:
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    if not np.all(np.isfinite(rdp)):
        finite = np.isfinite(rdp)
        if not finite.any():
            return math.inf
        rdp, orders = rdp[finite], orders[finite]
    return float(compute_epsilon(orders, rdp, delta)[0])


def epsilon(mech: RoundMechanism, *, rounds: int, sampling: float, delta: float) -> float:
    """(epsilon, delta) after ``rounds`` rounds at client sampling rate ``sampling``."""
    _check(rounds, sampling, delta)
    per_round = subsampled_rdp(mech.rdp(), sampling)
    return rdp_to_epsilon(rounds * per_round, delta)


def gaussian_epsilon(noise_multiplier: float, *, rounds: int, sampling: float, delta: float) -> float:
    """The continuous Gaussian mechanism's epsilon, from dp-accounting's RDP accountant."""
    import dp_accounting

    _check(rounds, sampling, delta)
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling, event)
    accountant = dp_accounting.rdp.RdpAccountant(list(map(float, ORDERS)))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def _check(rounds: int, sampling: float, delta: float) -> None:
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigurationError(f"rounds must be a positive integer, got {rounds!r}")
    if not 0 < sampling <= 1:
        raise ConfigurationError(f"sampling rate must lie in (0, 1], got {sampling!r}")
    if not 0 < delta < 1:
        raise ConfigurationError(f"delta must lie in (0, 1), got {delta!r}")


def log_bisect(accept, low: float, high: float, *, rel_tol: float = 1e-9) -> tuple[float, float]:
    """Bisection in log space for a monotone ``accept`` (False at ``low``, True at ``high``).

    Returns (largest rejected, smallest accepted) found, within a factor of 1 + rel_tol."""
    for _ in range(200):
        if high / low < 1 + rel_tol:
            break
        mid = math.sqrt(low * high)
        low, high = (low, mid) if accept(mid) else (mid, high)
    return low, high


def calibrate(epsilon_of_z, target_epsilon: float, *, low: float = 1e-3, high: float = 1e3) -> float:
    """The smallest noise multiplier z with epsilon_of_z(z) <= target (within 0.01%)."""
    if target_epsilon <= 0:
        raise ConfigurationError(f"target epsilon must be > 0, got {target_epsilon}")
    if epsilon_of_z(high) > target_epsilon:
        raise ConfigurationError(
            f"even noise multiplier {high} does not reach epsilon {target_epsilon}: lower the "
            "number of rounds or the sampling rate, or raise delta"
        )
    return log_bisect(lambda z: epsilon_of_z(z) <= target_epsilon, low, high, rel_tol=1e-4)[1]
