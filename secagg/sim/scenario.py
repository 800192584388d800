"""A simulated round's scenario: test inputs, a dropout schedule, and the reference sums.

``seed`` fixes the test data (inputs, which clients drop). Protocol secrets come from the OS
CSPRNG unless the caller passes a deterministic source: for tests and transcript vectors only.
"""

from __future__ import annotations

import numpy as np

from secagg.errors import ConfigurationError, RemoteProtocolError


class IdentityUnknown(RemoteProtocolError):
    """A client id the registry does not vouch for."""
from secagg.protocol.rounds import STAGE_ORDER, Stage
from secagg.quantize import ring_dtype, ring_mask

DROP_STAGE_CHOICES = [s.value for s in STAGE_ORDER] + ["mixed"]


def dropout_schedule(clients: int, dropout: float, drop_stage: str, seed: int | None) -> dict[int, Stage]:
    """Choose round(dropout * n) clients at random and the stage at which each goes silent."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigurationError(f"dropout must lie in [0, 1), got {dropout}")
    if drop_stage not in DROP_STAGE_CHOICES:
        raise ConfigurationError(f"drop stage must be one of {DROP_STAGE_CHOICES}, got {drop_stage!r}")
    gen = np.random.default_rng(seed)
    count = int(round(dropout * clients))
    chosen = sorted(int(c) for c in gen.choice(np.arange(1, clients + 1), size=count, replace=False))
    if drop_stage == "mixed":
        stages = gen.integers(0, len(STAGE_ORDER), size=count)
        return {c: STAGE_ORDER[s] for c, s in zip(chosen, stages)}
    return {c: Stage(drop_stage) for c in chosen}


def make_input(seed: int | None, client: int, dim: int, value_range: float) -> np.ndarray:
    """Test data for one client: uniform in [-R, R], reproducible from (seed, client)."""
    gen = np.random.default_rng(None if seed is None else [seed, client])
    return gen.uniform(-value_range, value_range, dim)


class IdentityTable:
    """The simulator's stand-in for the registry: client id -> Ed25519 verify key. An id it does
    not hold is refused like the registry refuses it (``secagg.identity.Registry`` is the real
    one, SQLite-backed)."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self._keys = dict(keys)

    def __call__(self, client: int) -> bytes:
        try:
            return self._keys[client]
        except KeyError:
            raise IdentityUnknown(f"client {client} is not enrolled", client=client) from None


class TruthRecorder:
    """Wraps each client's encoder to keep the reference sums a report checks the result against.

    It sees only what an encoder sees (the raw input and the ring vector it makes). With
    ``keep_each`` it keeps every client's vectors, so the truth is exact for any set of
    contributors (rounds with faults, where a client may encode and then not make it into the
    sum); otherwise it keeps running sums, O(d), and the truth is known when every client that
    encoded is a contributor.
    """

    def __init__(self, ring_dim: int, bits: int, value_dim: int, *, keep_each: bool) -> None:
        self.bits = bits
        self.keep_each = keep_each
        self.ring = np.zeros(ring_dim, dtype=ring_dtype(bits))
        self.values = np.zeros(value_dim, dtype=np.float64)
        self.encoded: set[int] = set()
        self._each: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def wrap(self, client: int, encoder) -> _Recording:
        return _Recording(self, client, encoder)

    def _record(self, client: int, ring: np.ndarray, value: np.ndarray) -> None:
        self.encoded.add(client)
        if self.keep_each:
            self._each[client] = (ring.copy(), value.copy())
        else:
            np.add(self.ring, ring, out=self.ring)
            np.add(self.values, value, out=self.values)

    def truth(self, contributors) -> tuple[np.ndarray, np.ndarray] | None:
        """(ring sum mod 2^b, float sum) over ``contributors``, or None if it cannot be known."""
        contributors = set(contributors)
        if self.keep_each:
            ring, values = np.zeros_like(self.ring), np.zeros_like(self.values)
            for c in contributors:
                np.add(ring, self._each[c][0], out=ring)
                np.add(values, self._each[c][1], out=values)
        elif contributors == self.encoded:
            ring, values = self.ring.copy(), self.values
        else:
            return None
        return ring & ring.dtype.type(ring_mask(self.bits)), values


class _Recording:
    def __init__(self, recorder: TruthRecorder, client: int, inner) -> None:
        self._recorder, self._client, self.inner = recorder, client, inner

    def prepare(self, config, client: int) -> None:
        if hasattr(self.inner, "prepare"):
            self.inner.prepare(config, client)

    def begin_round(self, config, client: int) -> None:
        self.inner.begin_round(config, client)

    def encode(self, raw) -> np.ndarray:
        ring = self.inner.encode(raw)
        value = getattr(self.inner, "sent_value", None)
        self._recorder._record(self._client, ring, np.asarray(raw if value is None else value, np.float64))
        return ring
