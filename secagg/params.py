"""Choosing the SecAgg+ graph degree k and Shamir threshold t (Bell et al. 2020, Sec. 3-4).

Theory of operation. Clients sit on a ring in a per-round random order; each shares keys with its
k/2 nearest neighbours on either side (a Harary graph). We try k = 2, 4, 6, ... and take the first
k for which three things hold, each with the statistical parameters of the paper (privacy failure
below 2^-sigma with sigma = 40, correctness failure below 2^-eta with eta = 20):

1. the graph stays connected after the corrupt and dropped clients are removed (a union bound on
   two separated runs of k/2 removed clients),
2. a threshold t1 that the corrupt neighbours of a client exceed only with probability
   2^-(sigma+1)/n (hypergeometric upper tail),
3. a threshold t2 that the surviving neighbours of a client fall below only with probability
   2^-eta/n (hypergeometric lower tail),

and t1 < t2; then t = max(t1 + 1, 2). Against a semi-malicious or malicious server t1 is raised to
ceil((t1 + k - 1.25) / 2), so that 2t > k + (corrupt neighbours): a server can never gather both
the self-mask shares and the key shares of one client. Against a malicious server the corrupt
clients may also withhold their shares, so the correctness bound counts only honest survivors
(n - dropped - corrupt); this is the class the authenticated protocol is built for (SPEC
section 14), and its full-graph rule is Bonawitz et al.'s t > (n + n_corrupt) / 2. The tails are taken in log space
(log-pmf from math.lgamma, summed with logaddexp); plain cdf() underflows at these
probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import numpy as np

from secagg.errors import ConfigurationError

SIGMA = 40
ETA = 20
_EPS = 1e-14


class AdversaryClass(str, Enum):
    SEMI_HONEST = "semi-honest"
    SEMI_MALICIOUS = "semi-malicious"
    MALICIOUS = "malicious"

    @property
    def strength(self) -> int:
        """Order of the classes: a config for a stronger adversary protects against a weaker one."""
        return list(AdversaryClass).index(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphParameters:
    clients: int
    degree: int
    threshold: int
    adversarial_rate: float
    dropout_rate: float
    adversary: AdversaryClass
    full_graph: bool

    @property
    def max_dropped(self) -> int:
        """Dropouts the degree and threshold were chosen to survive (with prob. 1 - 2^-eta)."""
        return math.floor(self.dropout_rate * self.clients + _EPS)

    def as_dict(self) -> dict:
        return {
            "clients": self.clients,
            "degree": self.degree,
            "threshold": self.threshold,
            "adversarial_rate": self.adversarial_rate,
            "dropout_rate": self.dropout_rate,
            "adversary": self.adversary.value,
            "full_graph": self.full_graph,
            "sigma": SIGMA,
            "eta": ETA,
        }


def _check_rates(clients: int, adversarial_rate: float, dropout_rate: float, adversary) -> None:
    if not isinstance(clients, int) or clients < 1:
        raise ConfigurationError(f"the number of clients must be at least 1, got {clients!r}")
    for name, rate in (("adversarial rate", adversarial_rate), ("dropout rate", dropout_rate)):
        if not (0.0 <= rate < 1.0):
            raise ConfigurationError(f"the {name} must lie in [0, 1), got {rate!r}")
    if adversary is AdversaryClass.SEMI_HONEST and adversarial_rate + dropout_rate > 0.9 + _EPS:
        raise ConfigurationError(
            f"infeasible against a semi-honest server: adversarial rate {adversarial_rate} + "
            f"dropout rate {dropout_rate} = {adversarial_rate + dropout_rate:.4g} exceeds 0.9; "
            "lower one of them"
        )
    if adversary is not AdversaryClass.SEMI_HONEST:
        # A malicious server's corrupt clients may also withhold their shares: they count as
        # dropouts for correctness.
        lost = dropout_rate + (adversarial_rate if adversary is AdversaryClass.MALICIOUS else 0.0)
        if adversarial_rate + 2 * lost > 0.9 + _EPS:
            raise ConfigurationError(
                f"infeasible against a {adversary.value} server: adversarial rate "
                f"{adversarial_rate} + 2 x {lost:.4g} (the clients it may lose) = "
                f"{adversarial_rate + 2 * lost:.4g} exceeds 0.9; lower one of them"
            )


def _log_disconnect_probability(n: int, k: int, removed: int) -> float:
    if k > removed:
        return -math.inf
    return (
        math.log(n)
        + math.log(n - k - 1)
        - math.log(2)
        + math.lgamma(removed + 1)
        + math.lgamma(n - k + 1)
        - math.lgamma(n + 1)
        - math.lgamma(removed - k + 1)
    )


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i = 0..n, from math.lgamma."""
    return np.fromiter(map(math.lgamma, range(1, n + 2)), dtype=np.float64, count=n + 1)


def _log_pmf(n: int, marked: int, k: int) -> np.ndarray:
    """log Pr[H = x] for x = 0..k, H ~ Hypergeometric(n, marked, k draws); log 0 off the support.

    C(marked, x) C(n - marked, k - x) / C(n, k) in log space from a table of log-factorials:
    scipy.stats would cost every process a third of a second to import, and tests/test_params.py
    checks this against it.
    """
    f = _log_factorials(n)
    x = np.arange(max(0, k - (n - marked)), min(marked, k) + 1)
    out = np.full(k + 1, -math.inf)
    out[x] = (
        (f[marked] - f[x] - f[marked - x])
        + (f[n - marked] - f[k - x] - f[n - marked - k + x])
        - (f[n] - f[k] - f[n - k])
    )
    return out


def _privacy_bound(n: int, corrupt: int, k: int, log_bound: float) -> int:
    """Smallest x with Pr[H_adv > x] < bound; H_adv ~ Hypergeometric(n, corrupt, k)."""
    # upper[x] = log Pr[H > x] = logsumexp(logpmf[x+1:]); upper[k] = log 0.
    upper = np.append(np.logaddexp.accumulate(_log_pmf(n, corrupt, k)[::-1])[::-1][1:], -np.inf)
    return int(np.argmax(upper < log_bound))


def _correctness_bound(n: int, survivors: int, k: int, log_bound: float) -> int:
    """Largest x with Pr[H_surv < x] < bound; H_surv ~ Hypergeometric(n, survivors, k)."""
    # lower[x] = log Pr[H < x] = logsumexp(logpmf[:x]); lower[0] = log 0.
    lower = np.concatenate(([-np.inf], np.logaddexp.accumulate(_log_pmf(n, survivors, k))[:-1]))
    return int(np.flatnonzero(lower < log_bound)[-1])


def _corrupt(n: int, adversarial_rate: float) -> int:
    return math.floor(adversarial_rate * n + _EPS)


def _shares_bound(n: int, k: int, corrupt: int, adversary: AdversaryClass) -> int:
    """t1: the share count a server (with its corrupt clients) must never reach at degree k."""
    t1 = _privacy_bound(n, corrupt, k, -(SIGMA + 1) * math.log(2) - math.log(n))
    if adversary is not AdversaryClass.SEMI_HONEST:
        t1 = math.ceil((t1 + k - 1.25) / 2)  # 2t > k + corrupt neighbours
    return t1


def minimum_threshold(
    clients: int, degree: int, adversarial_rate: float, adversary: AdversaryClass | str
) -> int:
    """The least threshold that keeps a degree-``degree`` graph private against ``adversary``
    with the given adversarial rate: what a client demands of an announced round config."""
    adversary = AdversaryClass(adversary)
    n = clients
    corrupt = _corrupt(n, adversarial_rate)
    if degree >= n - 1:  # Bonawitz et al.: t > n_corrupt, and t > (n + n_corrupt) / 2 if malicious
        if adversary is AdversaryClass.SEMI_HONEST:
            return max(2, corrupt + 1)
        return max(2, (n + corrupt) // 2 + 1)
    return max(_shares_bound(n, degree, corrupt, adversary) + 1, 2)


@lru_cache(maxsize=64)
def find_parameters(
    clients: int,
    adversarial_rate: float,
    dropout_rate: float,
    adversary: AdversaryClass | str = AdversaryClass.SEMI_HONEST,
) -> GraphParameters:
    """The smallest even degree k (and its threshold t) that meets the bounds above. Cached: every
    client of a round asks it again to check the announced config."""
    adversary = AdversaryClass(adversary)
    _check_rates(clients, adversarial_rate, dropout_rate, adversary)
    n = clients
    corrupt = _corrupt(n, adversarial_rate)
    dropped = math.floor(dropout_rate * n + _EPS)
    survivors = math.ceil((1 - dropout_rate) * n - _EPS)
    if adversary is AdversaryClass.MALICIOUS:
        survivors -= corrupt  # corrupt clients may withhold their shares
    log_correctness = -ETA * math.log(2) - math.log(n)

    for k in range(2, n - 1, 2):
        if _log_disconnect_probability(n, k, corrupt + dropped) >= -(SIGMA + 1) * math.log(2):
            continue
        t1 = _shares_bound(n, k, corrupt, adversary)
        t2 = _correctness_bound(n, survivors, k, log_correctness)
        t = max(t1 + 1, 2)  # a threshold of 1 lets any one neighbour reveal a secret
        if t <= t2:  # raised to 2, t must still meet the correctness bound (small n: it did not)
            return GraphParameters(
                clients=n,
                degree=k,
                threshold=t,
                adversarial_rate=adversarial_rate,
                dropout_rate=dropout_rate,
                adversary=adversary,
                full_graph=False,
            )
    raise ConfigurationError(
        f"no SecAgg+ graph degree below n - 1 = {n - 1} meets the bounds for n = {n}, "
        f"adversarial rate {adversarial_rate}, dropout rate {dropout_rate} ({adversary.value}); "
        "use the full graph (full_graph_parameters) or lower the rates"
    )


def full_graph_parameters(
    clients: int,
    threshold: int,
    adversarial_rate: float = 0.0,
    adversary: AdversaryClass | str = AdversaryClass.SEMI_HONEST,
) -> GraphParameters:
    """Original SecAgg: every client shares with all n - 1 others, with a user-given threshold."""
    adversary = AdversaryClass(adversary)
    _check_rates(clients, adversarial_rate, 0.0, adversary)
    n = clients
    if n < 2:
        raise ConfigurationError(f"secure aggregation needs at least 2 clients, got {n}")
    if not 2 <= threshold <= n - 1:
        raise ConfigurationError(
            f"threshold {threshold} must lie in [2, {n - 1}] (each client has n - 1 = {n - 1} "
            "share holders)"
        )
    minimum = minimum_threshold(n, n - 1, adversarial_rate, adversary)
    if adversary is AdversaryClass.SEMI_HONEST:
        rule = f"t > n_corrupt = floor(gamma * n) = {minimum - 1}"
    else:
        rule = "t > (n + n_corrupt) / 2, n_corrupt = floor(gamma * n)"
    if threshold < minimum:
        raise ConfigurationError(
            f"threshold {threshold} is too low for privacy against a {adversary.value} server "
            f"with adversarial rate {adversarial_rate}: need {rule}; use t >= {minimum}"
        )
    return GraphParameters(
        clients=n,
        degree=n - 1,
        threshold=threshold,
        adversarial_rate=adversarial_rate,
        dropout_rate=(n - 1 - threshold) / n,
        adversary=adversary,
        full_graph=True,
    )
