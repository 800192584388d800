"""Fixed-point encoding of real vectors into the ring Z_(2^b), overflow-safe by construction.

Theory of operation. Each client's input x lies in a declared range [-R, R]. A coordinate is
mapped to v = (x + R) / (2R) * L in [0, L] and rounded stochastically to an integer q in {0..L}:
up with probability v - floor(v), so E[q] = v (unbiased). The server receives sum(q) over the m
contributing clients and decodes sum(x) ~= sum(q) * 2R / L - m * R.

Because every q is in [0, L], the sum over at most n clients is at most n * L. The configuration
is accepted only if n * L <= 2^b - 1, so the ring sum never wraps and decoding is exact in the
ring (this is the check Flower's guard gets wrong: it bounds the wrong quantity). The order of
operations above keeps v <= L exactly in floating point, so the bound holds without clamping.

L is at most 2^52: float64 inputs carry no more precision than that. Rounding randomness is the
AES-CTR mask PRG keyed with 32 fresh bytes of the injected randomness source (the OS CSPRNG in
production), never a fixed or time-based seed; its 64-bit words give uniforms as
(w >> 11) * 2^-53, so another implementation reproduces the rounding exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from secagg.crypto import prg
from secagg.crypto.randomness import RandomSource
from secagg.errors import ConfigurationError, InvalidInput

MIN_BITS = 1
MAX_BITS = 62
MAX_LEVELS = 2**52


def ring_dtype(bits: int) -> type:
    return np.uint32 if bits <= 32 else np.uint64


def ring_mask(bits: int) -> int:
    return (1 << bits) - 1


def check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigurationError(f"bit width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def smallest_safe_bits(clients: int, levels: int) -> int:
    """The smallest b with clients * levels <= 2^b - 1."""
    return max(MIN_BITS, (clients * levels).bit_length())


# Real numbers only: float, signed and unsigned integer kinds. Booleans, complex numbers,
# timedelta64 (which NumPy counts as an integer subtype), datetime64, strings and objects are refused.
REAL_KINDS = "fiu"


def real_values(x: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``x`` as a flat float64 array after checking it is a NumPy array of ``shape`` holding finite
    real numbers. Raises ``InvalidInput`` naming ``what`` and the first offending coordinate."""
    if not isinstance(x, np.ndarray):
        raise InvalidInput(f"{what} must be a NumPy array, got {type(x).__name__}")
    if x.shape != tuple(shape):
        raise InvalidInput(f"{what} must have shape {tuple(shape)}, got {x.shape}")
    if x.dtype.kind not in REAL_KINDS:
        raise InvalidInput(f"{what} must hold real numbers (float or integer), got dtype {x.dtype}")
    values = x.astype(np.float64, copy=False).reshape(-1)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InvalidInput(
            f"{what} has {int(bad.sum())} non-finite value(s) (first at flat index {first}: {values[first]})"
        )
    return values


def rounding_uniforms(key: bytes, count: int) -> np.ndarray:
    """``count`` uniforms in [0, 1): the top 53 bits of each 64-bit word of PRG(key)."""
    words = prg.expand(key, count, np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantizer:
    bits: int
    value_range: float
    levels: int

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if not (isinstance(self.value_range, (int, float)) and math.isfinite(self.value_range)
                and self.value_range > 0):
            raise ConfigurationError(f"value range must be a finite number > 0, got {self.value_range!r}")
        if not isinstance(self.levels, int) or not 1 <= self.levels <= MAX_LEVELS:
            raise ConfigurationError(
                f"quantisation levels must be an integer in [1, 2^52], got {self.levels!r}"
            )
        if self.levels > ring_mask(self.bits):
            raise ConfigurationError(
                f"{self.levels} levels do not fit the ring Z_2^{self.bits}; "
                f"use bits >= {smallest_safe_bits(1, self.levels)}"
            )

    @classmethod
    def for_clients(
        cls, clients: int, *, bits: int, value_range: float = 1.0, levels: int | None = None
    ) -> Quantizer:
        """A quantiser whose sum over ``clients`` inputs cannot wrap Z_(2^bits).

        Without ``levels``, the finest resolution that is safe is chosen.
        """
        check_bits(bits)
        if not isinstance(clients, int) or clients < 1:
            raise ConfigurationError(f"the number of clients must be at least 1, got {clients!r}")
        if levels is None:
            levels = min(ring_mask(bits) // clients, MAX_LEVELS)
            if levels < 1:
                raise ConfigurationError(
                    f"the ring Z_2^{bits} is too small for {clients} clients: even one level per "
                    f"client could wrap the sum; use bits >= {smallest_safe_bits(clients, 1)}"
                )
        quantizer = cls(bits=bits, value_range=value_range, levels=levels)
        quantizer.check_capacity(clients)
        return quantizer

    @property
    def dtype(self) -> type:
        return ring_dtype(self.bits)

    @property
    def step(self) -> float:
        """The value of one quantisation level."""
        return 2 * self.value_range / self.levels

    def check_capacity(self, clients: int) -> None:
        """Refuse a configuration whose sum over ``clients`` inputs could wrap the ring."""
        worst = clients * self.levels
        if worst > ring_mask(self.bits):
            raise ConfigurationError(
                f"the ring Z_2^{self.bits} is too small: {clients} clients at {self.levels} levels "
                f"each can sum to {worst} > 2^{self.bits} - 1; use bits >= "
                f"{smallest_safe_bits(clients, self.levels)} or at most "
                f"{ring_mask(self.bits) // clients} levels"
            )

    def validate(self, x: np.ndarray, dim: int) -> np.ndarray:
        """Return ``x`` as float64 after checking shape, dtype, finiteness and range."""
        x = real_values(x, (dim,), "input")
        peak = float(np.abs(x).max(initial=0.0))
        if peak > self.value_range:
            outside = int((np.abs(x) > self.value_range).sum())
            raise InvalidInput(
                f"input has {outside} coordinate(s) outside the declared range "
                f"[-{self.value_range}, {self.value_range}] (largest magnitude {peak}); "
                "it is refused, not clipped"
            )
        return x

    def encode(self, x: np.ndarray, *, dim: int, rng: RandomSource) -> np.ndarray:
        """Validate ``x`` and quantise it into the ring (values in [0, L])."""
        x = self.validate(x, dim)
        v = (x + self.value_range) / (2 * self.value_range) * float(self.levels)
        floor = np.floor(v)
        q = floor + (rounding_uniforms(rng(prg.SEED_BYTES), v.shape[0]) < (v - floor))
        return q.astype(self.dtype)

    def decode(self, ring_sum: np.ndarray, contributors: int) -> np.ndarray:
        """The float sum of ``contributors`` inputs from the exact ring sum of their encodings."""
        return ring_sum.astype(np.float64) * self.step - contributors * self.value_range


class RangeEncoder:
    """The default client encoder: the round's range quantiser with stochastic rounding.

    An encoder turns a client's raw input into a ring vector. The Client calls, in order:
    ``prepare(config, client)`` (optional: take the round's parameters, no side effects),
    ``encode(raw) -> ring vector`` (may refuse with ``InvalidInput``; for a lazily made input this
    comes later, at MaskedInput), and ``begin_round(config, client)`` once the client commits to
    the round, before anything is sent (may refuse: ``secagg.privacy.DPEncoder`` checks its plan
    and charges the privacy budget here, so a refused input costs no budget).
    """

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng
        self._config = None

    def prepare(self, config, client: int) -> None:
        config.quantizer  # noqa: B018 - refuses a privacy-layer round (levels = 0) by name
        self._config = config

    def begin_round(self, config, client: int) -> None:
        pass

    def encode(self, raw) -> np.ndarray:
        config = self._config
        return config.quantizer.encode(raw, dim=config.dim, rng=self._rng)
