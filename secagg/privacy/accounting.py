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
The RDP curve is converted to (epsilon, delta) by dp-accounting's RDP accountant conversion.

PLD (the default for the distributed discrete Gaussian). The third bound above is the Renyi curve
of a Gaussian mechanism: Kairouz et al.'s Thm. 1 makes one round (1/2) eps_z^2-concentrated DP
with eps_z = L_2 + sqrt(D) tau, the concentration of the continuous Gaussian of noise multiplier
1 / eps_z. dp-accounting's privacy-loss-distribution accountant composes that Gaussian over T
rounds with Poisson sampling at q (pessimistic discretisation, so the figure is an upper bound for
that Gaussian), and the reported epsilon is min(PLD, RDP). What this rests on, plainly: the PLD
figure is tight for the continuous Gaussian; the sum of discrete Gaussians is within tau (tiny
once sigma_c >= 2) of one discrete Gaussian, whose own PLD dp-accounting computes in one
dimension and which matches the continuous one to 1e-4 relative at central sigma >= 20 (tested);
a concentrated-DP bound alone does not imply the Gaussian's (epsilon, delta) curve, so
``accountant="rdp"`` gives the figure that follows from the papers' theorems alone. Skellam has
no Gaussian form here and always uses RDP.

The continuous Gaussian baseline (``gaussian_epsilon``) uses the same two accountants.

Rounds of different plans compose the same way (``composed_accounting``, which a client's
``PrivacyBudget`` uses over its recorded rounds): their Renyi curves add, and when every round
has a Gaussian form the PLD accountant composes those Gaussians, each at its own sampling rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import special

from secagg.errors import ConfigurationError

ORDERS = np.arange(2, 257)
DEFAULT_BETA = math.exp(-0.5)


# PLD value grid: dp-accounting rounds losses up to this step (pessimistic), so a coarser grid
# only loosens the bound; 1e-3 moves epsilon by under 1e-4 and runs 5x faster than 1e-4.
PLD_DISCRETIZATION = 1e-3


class Mechanism(str, Enum):
    DISTRIBUTED_DISCRETE_GAUSSIAN = "ddgauss"
    SKELLAM = "skellam"


class Accountant(str, Enum):
    PLD = "pld"  # min(PLD, RDP): the tighter of the two
    RDP = "rdp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Accounting:
    """An (epsilon, delta) figure and the accountant that gave it."""

    epsilon: float
    delta: float
    accountant: str  # "pld" or "rdp": whichever gave the smaller epsilon
    rdp_epsilon: float
    pld_epsilon: float | None  # None when PLD does not apply (Skellam) or was not asked for

    def as_dict(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta, "accountant": self.accountant,
                "rdp_epsilon": self.rdp_epsilon, "pld_epsilon": self.pld_epsilon}


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

    def _tau(self) -> float:
        k = np.arange(1, self.noise_clients)
        return 10 * float(np.sum(np.exp(-2 * math.pi**2 * self.local_variance * k / (k + 1))))

    def gaussian_noise_multiplier(self) -> float | None:
        """1 / eps_z: the continuous Gaussian with this round's concentrated-DP parameter
        (Kairouz et al. 2021, Thm. 1). None for Skellam, or without noise."""
        if self.mechanism is not Mechanism.DISTRIBUTED_DISCRETE_GAUSSIAN or self.local_variance <= 0:
            return None
        l2 = self.l2_sensitivity / math.sqrt(self.noise_clients * self.local_variance)
        return 1.0 / (l2 + math.sqrt(self.dim) * self._tau())

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
        tau = self._tau()
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


def pld_gaussian_epsilon(noise_multiplier: float, *, rounds: int, sampling: float, delta: float) -> float:
    """dp-accounting's PLD accountant: the Gaussian of this multiplier, Poisson-sampled, T rounds."""
    return pld_composed_epsilon([(noise_multiplier, sampling, rounds)], delta=delta)


def pld_composed_epsilon(groups, *, delta: float) -> float:
    """dp-accounting's PLD accountant over rounds that may differ: ``groups`` of (noise
    multiplier, sampling rate, rounds), each a Poisson-sampled Gaussian composed with itself, the
    groups composed with one another (the accountant convolves their loss distributions)."""
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    accountant = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    for noise_multiplier, sampling, rounds in groups:
        event = dp_accounting.GaussianDpEvent(noise_multiplier)
        if sampling < 1:
            event = dp_accounting.PoissonSampledDpEvent(sampling, event)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def accounting(mech: RoundMechanism, *, rounds: int, sampling: float, delta: float,
               accountant: Accountant | str = Accountant.PLD) -> Accounting:
    """(epsilon, delta) after ``rounds`` rounds at client sampling rate ``sampling``, and which
    accountant gave it (see the module docstring for what each rests on)."""
    _check(rounds, sampling, delta)
    return _accounting(mech, rounds, float(sampling), float(delta), _accountant(accountant))


@functools.lru_cache(maxsize=1024)
def _accounting(mech: RoundMechanism, rounds: int, sampling: float, delta: float, accountant) -> Accounting:
    # A pure function of frozen inputs, asked again and again for the same plan (every report,
    # every group of a grouped round): dp-accounting's PLD composition is most of its cost.
    return composed_accounting([(mech, sampling, rounds)], delta=delta, accountant=accountant)


def composed_accounting(groups, *, delta: float, accountant: Accountant | str = Accountant.PLD) -> Accounting:
    """(epsilon, delta) of rounds that may differ: ``groups`` of (RoundMechanism, sampling rate,
    rounds). RDP curves add across all of them; PLD composes their Gaussians when every round
    has one (a single Skellam round leaves RDP alone); the smaller epsilon is reported."""
    accountant = _accountant(accountant)
    groups = [(mech, sampling, rounds) for mech, sampling, rounds in groups if rounds]
    if not groups:
        return Accounting(epsilon=0.0, delta=delta, accountant="rdp", rdp_epsilon=0.0, pld_epsilon=None)
    for _, sampling, rounds in groups:
        _check(rounds, sampling, delta)
    rdp_eps = rdp_to_epsilon(sum(rounds * subsampled_rdp(mech.rdp(), sampling)
                                 for mech, sampling, rounds in groups), delta)
    pld_eps = None
    if accountant is Accountant.PLD:
        zs = [mech.gaussian_noise_multiplier() for mech, _, _ in groups]
        if all(zs):
            pld_eps = pld_composed_epsilon([(z, sampling, rounds) for z, (_, sampling, rounds)
                                            in zip(zs, groups)], delta=delta)
    if pld_eps is not None and pld_eps < rdp_eps:
        return Accounting(epsilon=pld_eps, delta=delta, accountant="pld", rdp_epsilon=rdp_eps,
                          pld_epsilon=pld_eps)
    return Accounting(epsilon=rdp_eps, delta=delta, accountant="rdp", rdp_epsilon=rdp_eps,
                      pld_epsilon=pld_eps)


def epsilon(mech: RoundMechanism, *, rounds: int, sampling: float, delta: float,
            accountant: Accountant | str = Accountant.PLD) -> float:
    """(epsilon, delta) after ``rounds`` rounds at client sampling rate ``sampling``."""
    return accounting(mech, rounds=rounds, sampling=sampling, delta=delta, accountant=accountant).epsilon


def gaussian_epsilon(noise_multiplier: float, *, rounds: int, sampling: float, delta: float,
                     accountant: Accountant | str = Accountant.PLD) -> float:
    """The continuous Gaussian mechanism's epsilon, from dp-accounting's PLD accountant (default)
    or its RDP accountant (``accountant="rdp"``)."""
    import dp_accounting

    _check(rounds, sampling, delta)
    if not (_is_real(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigurationError(f"noise multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if noise_multiplier == 0:
        return math.inf  # no noise, no privacy
    if _accountant(accountant) is Accountant.PLD:
        return pld_gaussian_epsilon(noise_multiplier, rounds=rounds, sampling=sampling, delta=delta)
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling, event)
    rdp = dp_accounting.rdp.RdpAccountant(list(map(float, ORDERS)))
    rdp.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(rdp.get_epsilon(delta))


def analytic_gaussian_delta(epsilon: float, noise_multiplier: float) -> float:
    """The Gaussian mechanism's exact delta at ``epsilon`` (Balle and Wang 2018, Thm. 8), one
    release, sensitivity 1: Phi(1/(2 z) - eps z) - e^eps Phi(-1/(2 z) - eps z)."""
    from scipy.stats import norm

    z = noise_multiplier
    a, b = 1 / (2 * z) - epsilon * z, -1 / (2 * z) - epsilon * z
    return float(norm.cdf(a) - math.exp(epsilon + norm.logcdf(b)))


def analytic_gaussian_noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier of the one-release Gaussian mechanism that is (epsilon,
    delta)-DP: bisection (scipy's brentq) on Balle and Wang's exact delta(epsilon), which falls
    as the multiplier grows."""
    from scipy.optimize import brentq

    if not (_is_real(epsilon) and math.isfinite(epsilon) and epsilon > 0):
        raise ConfigurationError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    _check(1, 1.0, delta)
    low, high = 1e-3, 1.0
    while analytic_gaussian_delta(epsilon, high) > delta:
        high *= 2
    return float(brentq(lambda z: analytic_gaussian_delta(epsilon, z) - delta, low, high,
                        xtol=1e-12, rtol=1e-12))


def _accountant(accountant) -> Accountant:
    try:
        return Accountant(accountant)
    except ValueError:
        raise ConfigurationError(
            f"accountant must be one of {[a.value for a in Accountant]}, got {accountant!r}"
        ) from None


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check(rounds: int, sampling: float, delta: float) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ConfigurationError(f"rounds must be a positive integer, got {rounds!r}")
    if not (_is_real(sampling) and 0 < sampling <= 1):
        raise ConfigurationError(f"sampling rate must lie in (0, 1], got {sampling!r}")
    if not (_is_real(delta) and 0 < delta < 1):
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
    if not (_is_real(target_epsilon) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigurationError(f"target epsilon must be a finite number > 0, got {target_epsilon!r}")
    if epsilon_of_z(high) > target_epsilon:
        raise ConfigurationError(
            f"even noise multiplier {high} does not reach epsilon {target_epsilon}: lower the "
            "number of rounds or the sampling rate, or raise delta"
        )
    return log_bisect(lambda z: epsilon_of_z(z) <= target_epsilon, low, high, rel_tol=1e-4)[1]
