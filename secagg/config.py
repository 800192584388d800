"""The public parameters of one round, agreed before anything secret is sent.

The server announces a ``RoundConfig`` in its first message; every client checks it independently
(ring capacity, threshold, graph) before it generates a key. A configuration that cannot work is
refused here, with the smallest change that would make it work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from secagg.crypto.kdf import SESSION_ID_BYTES
from secagg.crypto.randomness import RandomSource, system_random
from secagg.errors import ConfigurationError
from secagg.graph import GRAPH_SEED_BYTES, Graph, harary_graph
from secagg.params import AdversaryClass, find_parameters, full_graph_parameters, minimum_threshold
from secagg.quantize import Quantizer, check_bits

PROTOCOL_VERSION = 1
MIN_CLIENTS = 3
MAX_CLIENTS = 2**24
MAX_DIM = 2**28
# levels = 0: clients hand in ring vectors made by the privacy layer (secagg.privacy), whose plan
# guarantees the sum does not wrap; the range quantiser is not used.
EXTERNAL_ENCODING = 0


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundConfig:
    session_id: bytes
    round: int
    num_clients: int
    dim: int
    bits: int
    degree: int
    threshold: int
    graph_seed: bytes
    value_range: float
    levels: int
    # Authenticated mode (SPEC section 12): the config is signed by the operator, adverts by the
    # clients' registered identity keys, and every party checks them. A client may require it.
    authenticated: bool = False
    # What (k, t) were chosen against (params.find_parameters): every client recomputes the
    # finder's answer from these and refuses a config that is weaker (``weakness``).
    adversary: AdversaryClass = AdversaryClass.SEMI_HONEST
    adversarial_rate: float = 0.0
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.authenticated, bool):
            raise ConfigurationError(f"authenticated must be a bool, got {self.authenticated!r}")
        if not isinstance(self.adversary, AdversaryClass):
            raise ConfigurationError(f"adversary must be an AdversaryClass, got {self.adversary!r}")
        for name in ("adversarial_rate", "dropout_rate"):
            rate = getattr(self, name)
            if not isinstance(rate, float) or not 0.0 <= rate < 1.0:
                raise ConfigurationError(f"{name} must be a float in [0, 1), got {rate!r}")
        if not isinstance(self.session_id, bytes) or len(self.session_id) != SESSION_ID_BYTES:
            raise ConfigurationError(f"session_id must be {SESSION_ID_BYTES} bytes")
        if not isinstance(self.graph_seed, bytes) or len(self.graph_seed) != GRAPH_SEED_BYTES:
            raise ConfigurationError(f"graph_seed must be {GRAPH_SEED_BYTES} bytes")
        _check_int("round", self.round, 0, 2**64 - 1)
        _check_int("num_clients", self.num_clients, MIN_CLIENTS, MAX_CLIENTS)
        _check_int("dim", self.dim, 1, MAX_DIM)
        n = self.num_clients
        full = self.degree == n - 1
        if not full and (
            not isinstance(self.degree, int) or self.degree % 2 or not 2 <= self.degree < n - 1
        ):
            raise ConfigurationError(
                f"degree must be even and in [2, {n - 2}], or {n - 1} (the full graph); "
                f"got {self.degree!r}"
            )
        if not isinstance(self.threshold, int) or not 2 <= self.threshold <= self.degree:
            raise ConfigurationError(
                f"threshold must lie in [2, degree = {self.degree}], got {self.threshold!r}: "
                "a threshold of 1 lets any single neighbour reveal a secret"
            )
        if self.levels == EXTERNAL_ENCODING:
            check_bits(self.bits)  # the privacy layer's plan bounds the sum instead
        else:
            # Validates bits, range and levels, and that n inputs cannot wrap the ring.
            self.quantizer.check_capacity(n)

    @property
    def quantizer(self) -> Quantizer:
        if self.levels == EXTERNAL_ENCODING:
            raise ConfigurationError(
                "this round's inputs are ring vectors encoded by the privacy layer (levels = 0); "
                "use its encoder and decoder"
            )
        return Quantizer(bits=self.bits, value_range=self.value_range, levels=self.levels)

    @property
    def graph(self) -> Graph:
        return harary_graph(self.num_clients, self.degree, self.graph_seed)

    @property
    def clients(self) -> range:
        return range(1, self.num_clients + 1)

    def weakness(self) -> str | None:
        """Why a client must refuse this config as weaker than the parameter finder gives for its
        n, adversary class and rates, or None. Against a (semi-)malicious server 2t > k is
        required (an honest holder never reveals both secrets of one peer, so no split of the
        holders yields t shares of both), and a degree below the finder's breaks its bounds."""
        n, k, t, cls = self.num_clients, self.degree, self.threshold, self.adversary
        against = f"a {cls.value} server with adversarial rate {self.adversarial_rate}"
        if cls is not AdversaryClass.SEMI_HONEST and 2 * t <= k:
            return f"2t = {2 * t} <= k = {k}: the server could gather both secrets of a client"
        try:
            if k < n - 1:
                found = find_parameters(n, self.adversarial_rate, self.dropout_rate, cls)
                if k < found.degree:
                    return (f"degree {k} is below {found.degree}, the least the parameter finder "
                            f"allows for {n} clients, dropout rate {self.dropout_rate} and {against}")
        except ConfigurationError as exc:
            return f"its parameters are infeasible: {exc}"
        least = minimum_threshold(n, k, self.adversarial_rate, cls)
        if t < least:
            return f"threshold {t} is below {least}, the least that keeps degree {k} private against {against}"
        return None

    @property
    def max_dropouts(self) -> int:
        """Dropouts a client's neighbourhood tolerates before one of its secrets is lost."""
        return self.degree - self.threshold

    @classmethod
    def create(
        cls,
        num_clients: int,
        dim: int,
        *,
        bits: int = 32,
        value_range: float = 1.0,
        levels: int | None = None,
        adversarial_rate: float = 0.05,
        dropout_rate: float = 0.1,
        adversary: AdversaryClass | str | None = None,
        full_graph: bool | str = False,
        threshold: int | None = None,
        round: int = 0,
        session_id: bytes | None = None,
        graph_seed: bytes | None = None,
        authenticated: bool = False,
        rng: RandomSource = system_random,
    ) -> RoundConfig:
        """Pick the graph and threshold with the parameter finder, then build the config.

        ``full_graph=True`` is original SecAgg (degree n - 1); its threshold defaults to two
        thirds of n - 1, raised to what the adversary class needs. ``full_graph="auto"``: the
        finder's sparse graph when it has one for n and the rates, else the full graph (too few
        clients for a sparse one). ``adversary`` defaults to malicious for an authenticated round
        (what its checks are for), else semi-honest.
        """
        _check_int("num_clients", num_clients, MIN_CLIENTS, MAX_CLIENTS)
        if adversary is None:
            adversary = AdversaryClass.MALICIOUS if authenticated else AdversaryClass.SEMI_HONEST
        adversary = AdversaryClass(adversary)
        if full_graph == "auto":
            try:
                find_parameters(num_clients, adversarial_rate, dropout_rate, adversary)
                full_graph = False
            except ConfigurationError:
                full_graph = True  # bad rates are refused again, by full_graph_parameters
        if full_graph:
            if threshold is None:
                threshold = min(num_clients - 1, max(
                    2, math.ceil(2 * (num_clients - 1) / 3),
                    minimum_threshold(num_clients, num_clients - 1, adversarial_rate, adversary)))
            params = full_graph_parameters(num_clients, threshold, adversarial_rate, adversary)
        else:
            params = find_parameters(num_clients, adversarial_rate, dropout_rate, adversary)
            if threshold is not None:
                if not params.threshold <= threshold <= params.degree:
                    raise ConfigurationError(
                        f"threshold {threshold} must lie in [{params.threshold}, {params.degree}] "
                        f"for degree {params.degree}: lower thresholds break privacy"
                    )
                params = replace(params, threshold=threshold)
        if levels == EXTERNAL_ENCODING:
            quantizer = None
        else:
            quantizer = Quantizer.for_clients(num_clients, bits=bits, value_range=value_range, levels=levels)
        return cls(
            session_id=session_id if session_id is not None else rng(SESSION_ID_BYTES),
            round=round,
            num_clients=num_clients,
            dim=dim,
            bits=bits,
            degree=params.degree,
            threshold=params.threshold,
            graph_seed=graph_seed if graph_seed is not None else rng(GRAPH_SEED_BYTES),
            value_range=float(value_range),
            levels=EXTERNAL_ENCODING if quantizer is None else quantizer.levels,
            authenticated=authenticated,
            adversary=adversary,
            adversarial_rate=float(adversarial_rate),
            dropout_rate=float(params.dropout_rate if full_graph else dropout_rate),
        )

    def describe(self) -> str:
        return (
            f"session {self.session_id.hex()[:8]} round {self.round}: {self.num_clients} clients, "
            f"dim {self.dim}, ring Z_2^{self.bits}, degree {self.degree}, threshold {self.threshold}"
            + f", against a {self.adversary.value} server"
            + (", authenticated" if self.authenticated else "")
        )
