"""A simulated round's scenario: test inputs, a dropout schedule, and the reference sums.

``seed`` fixes the test data (inputs, which clients drop). Protocol secrets come from the OS
CSPRNG unless the caller passes a deterministic source: for tests and transcript vectors only.
"""

from __future__ import annotations

import numpy as np

from secagg.crypto.randomness import RandomSource, fork
from secagg.errors import ConfigurationError
from secagg.protocol.client import Client, ClientLimits
from secagg.protocol.server import Server
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


def enrolled_clients(clients, rng: RandomSource):
    """A deployment for an authenticated round: a CA, an identity key per client, each enrolled
    in a real SQLite registry (in memory). Returns ({client: ClientIdentity}, registry); the
    registry is the lookup both the server and the clients use. Keys are forked
    from ``rng`` by label ("ca"; "client", c, "identity"), so the transcript vector fixes them."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secagg.identity import CertificateAuthority, ClientIdentity, EnrolmentLimits, Registry

    clients = list(clients)
    ca = CertificateAuthority.create("secagg simulation CA", valid_days=2,
                                     private_key=Ed25519PrivateKey.from_private_bytes(fork(rng, "ca")(32)))
    registry = Registry(":memory:", ca_certificate=ca.certificate,
                        limits=EnrolmentLimits(max_per_window=max(100, len(clients))))
    identities = {}
    for c in clients:
        identity = ClientIdentity.from_seed(c, fork(rng, "client", c, "identity")(32))
        certificate = ca.issue_client_certificate(c, identity.public_key_bytes, valid_days=1)
        registry.enroll(c, certificate, token=f"simulation client {c}", declared_examples=1)
        identities[c] = identity
    return identities, registry


def operator_key(rng: RandomSource):
    """The deployment's operator key (an Ed25519 key, forked from ``rng`` by label "operator"):
    it signs round configs and global models; the aggregation server never holds it."""
    from secagg.model_signing import operator_key_from_seed

    return operator_key_from_seed(fork(rng, "operator")(32))


def build_parties(config, root: RandomSource, input_of, encoder_of, *, limits: ClientLimits = ClientLimits(),
                  require_authenticated: bool = False, ledger_of=None, clients=None, **server_kw):
    """The server and the clients of one simulated round, each party's randomness forked from
    ``root`` by label ("server"; "client", c). An authenticated round's clients are enrolled in a
    registry and its config is signed by the operator key (``operator_key(root)``); the server
    relays the signature, the clients check it. ``input_of(c)`` is client c's input (an array, or
    a callable that makes it); ``encoder_of(c)`` its encoder; ``ledger_of(c)`` its RoundLedger, if
    any. ``clients``: the ids to make here (default all of the round's; ``()`` for a server whose
    clients live elsewhere, ``secagg.sim.pool``). Returns (server, {client: Client}, registry or None)."""
    signing = identities = registry = operator_public = None
    if config.authenticated:
        from secagg.protocol.keys import sign_config

        signing, registry = enrolled_clients(config.clients, root)
        identities = server_kw["identities"] = registry
        operator = operator_key(root)
        server_kw.setdefault("config_signature", sign_config(config, operator))
        operator_public = operator.public_key().public_bytes_raw()
    server = Server(config, rng=fork(root, "server"), **server_kw)
    clients = {
        c: Client(c, input_of(c), rng=fork(root, "client", c), encoder=encoder_of(c), limits=limits,
                  signing_key=signing and signing[c], identities=identities,
                  require_authenticated=require_authenticated, operator_key=operator_public,
                  ledger=ledger_of and ledger_of(c))
        for c in (config.clients if clients is None else clients)
    }
    return server, clients, registry


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

    def add_sums(self, clients, ring: np.ndarray, values: np.ndarray) -> None:
        """Running sums kept elsewhere (a worker process's clients, ``secagg.sim.pool``)."""
        if self.keep_each:
            raise ConfigurationError("a recorder that keeps each client's vectors cannot take sums")
        self.encoded.update(clients)
        np.add(self.ring, ring, out=self.ring)
        np.add(self.values, values, out=self.values)

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
