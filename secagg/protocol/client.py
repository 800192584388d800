"""The SecAgg+ client as a sans-IO state machine: a frame goes in, the frames to send come out.

Theory of operation (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020, Alg. 2). The rounds are the
rows of ``rounds.ROUNDS``; the client answers round i's request in ``_on_<key>``:

1. AdvertiseKeysRequest: check the announced configuration against this client's limits before
   any work that grows with it; check that it is not weaker than the parameter finder gives for
   its n and adversary class, that the operator signed it (authenticated rounds) and that it is
   not a round this client already joined (with a ``RoundLedger``). Then make two X25519 key
   pairs: c (to encrypt shares) and s (to agree pairwise mask seeds). Send both public keys.
2. ShareKeysRequest: check every relayed key (a valid, non-low-order point) and that the senders
   are graph neighbours, at least t of them. Draw the self-mask seed b; Shamir-share b and s t-of-k
   among the neighbours; encrypt each neighbour's pair of shares under a key agreed with its c
   key. Send them with a commitment to b, against which the server checks the b it reconstructs.
3. MaskedInputRequest: open the shares addressed to us. A ciphertext that does not open is its
   sender's fault: we name the sender in ``complaints`` (the server blames it) and hold nothing of
   it. Send y = x + PRG(b) + sum_v +-PRG(s_uv) mod 2^b over every neighbour in the request.
4. UnmaskRequest: for each neighbour listed as a survivor reveal our share of its b; for each one
   listed as dropped, our share of its s. Refuse a request that lists a peer as both, omits or
   invents a peer, or leaves fewer than t survivors: an honest client never reveals both secrets of
   one peer, which is what keeps a surviving client's input hidden (Bonawitz et al., Sec. 4).

Delivery is at-least-once: a byte-identical repeat of a frame already answered, a frame for
another session or round, and anything after the client finished are ignored and counted in
``ignored``. A *different* frame for a request already answered is the server equivocating: the
client refuses. A refusal raises a ``RemoteProtocolError`` (kept in ``error``) and ends the client.

The client never does I/O, never reads a clock and draws randomness only from the injected source,
forked by label.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import numpy as np

from secagg.codec import (
    PRE_CONFIG_LIMITS,
    Limits,
    canonical_cbor,
    decode,
    decode_signed_config,
    encode,
    encode_signed_config,
)
from secagg.config import RoundConfig
from secagg.crypto import kex, prg, shamir, sign
from secagg.crypto.sign import Signer
from secagg.crypto.digest import FrameDigest
from secagg.crypto.kdf import PURPOSE_SELF_MASK_COMMITMENT, derive_key
from secagg.crypto.randomness import RandomSource, fork, system_random
from secagg.errors import (
    BadSignature,
    ReplayedRound,
    WeakConfig,
    ConfigurationError,
    CryptoError,
    Equivocation,
    InconsistentRequest,
    InvalidInput,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    SecAggError,
    UnexpectedMessage,
)
from secagg.messages import (
    SERVER_ID,
    Abort,
    ConsistencyCheck,
    ConsistencyCheckRequest,
    AdvertiseKeys,
    AdvertiseKeysRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    Message,
    RevealedShare,
    ShareKeys,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.params import AdversaryClass
from secagg.protocol import keys
from secagg.protocol.ledger import RoundLedger
from secagg.protocol.masking import apply_masks
from secagg.protocol.rounds import (
    CLIENT_AWAIT,
    CLIENT_TRANSITIONS,
    CLIENT_TRANSITIONS_AUTHENTICATED,
    ROUND_OF_REQUEST,
    ROUNDS,
    ClientState,
)
from secagg.protocol.seam import Ignored, Outgoing
from secagg.quantize import MAX_BITS, RangeEncoder


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The largest round a client agrees to join, checked before any work that grows with it.

    Defaults are sized for a phone: a graph over a million clients costs it about a second to
    build; 10^8 coordinates are 400 MB at 32 bits. SPEC.md section 6.3 states them.
    """

    max_clients: int = 10**6
    max_dim: int = 10**8
    max_degree: int = 2048
    max_bits: int = MAX_BITS

    def fault(self, config: RoundConfig) -> str | None:
        for name, value, limit in (
            ("clients", config.num_clients, self.max_clients),
            ("coordinates", config.dim, self.max_dim),
            ("neighbours (degree)", config.degree, self.max_degree),
            ("bits per coordinate", config.bits, self.max_bits),
        ):
            if value > limit:
                return f"it announces {value:,} {name}; this client's limit is {limit:,}"
        return None


SNAPSHOT_VERSION = 1

InputSource = np.ndarray | Callable[[], np.ndarray] | None


class Client:
    """One client of one round. Feed it the server's frames with :meth:`receive`."""

    def __init__(
        self,
        client_id: int,
        input_vector: InputSource = None,
        *,
        rng: RandomSource = system_random,
        min_threshold: int = 2,
        encoder=None,
        limits: ClientLimits = ClientLimits(),
        signing_key: Signer | None = None,
        identities=None,
        require_authenticated: bool = False,
        operator_key: bytes | None = None,
        ledger: RoundLedger | None = None,
        min_adversary: AdversaryClass | str | None = None,
    ) -> None:
        """``input_vector``: the update, or a zero-argument callable that makes it when the round
        needs it (a simulated client's training). ``encoder``: turns the update into a ring
        vector (``secagg.privacy.DPEncoder``); default the round's range quantiser.

        Authenticated rounds: ``signing_key`` is this client's registered identity key, and
        ``identities`` the registry's view (a ``Registry``, or a ``client -> verify key``
        callable; see ``IdentityLookups``), with which it checks every neighbour's signed advert.
        With ``require_authenticated`` it refuses a round the server announces without
        authentication (a downgrade). ``operator_key`` is the operator's raw 32-byte Ed25519 key:
        a client that has one refuses a config the operator did not sign (authenticated rounds
        need it). ``ledger`` remembers the rounds this client joined, so a replayed round is
        refused. ``min_adversary``: the weakest adversary class a config may be planned against
        (default malicious with ``require_authenticated``, else any)."""
        if not isinstance(client_id, int) or isinstance(client_id, bool) or client_id < 1:
            raise ConfigurationError(f"client id must be a positive integer, got {client_id!r}")
        self.id = client_id
        self.state = ClientState.AWAIT_ADVERTISE_KEYS_REQUEST
        self.config: RoundConfig | None = None
        self.abort_reason: str | None = None
        self.error: SecAggError | None = None
        self.ignored = Ignored()
        self.limits = limits
        self._rng = rng
        self._min_threshold = min_threshold
        self._signing_key = signing_key
        self._identities = None if identities is None else IdentityLookups(identities)
        self._require_authenticated = require_authenticated
        self._operator_key = operator_key
        self._ledger = ledger
        if min_adversary is None:
            min_adversary = AdversaryClass.MALICIOUS if require_authenticated else AdversaryClass.SEMI_HONEST
        self._min_adversary = AdversaryClass(min_adversary)
        self._session = b""  # keys.session_hash of the accepted config
        self._advert: tuple[bytes, bytes] = (b"", b"")  # our (c, s) public keys
        self._pair_sessions: dict[int, bytes] = {}
        self._raw_input = input_vector
        self._encoder = encoder if encoder is not None else RangeEncoder(fork(rng, "quantize"))
        self._digest = FrameDigest(fork(rng, "frame_digest"))
        self._answered: dict[int, bytes] = {}  # round index -> digest of the request answered
        self._ring_input: np.ndarray | None = None
        self._s_private = b""  # raw, because it is Shamir-shared
        self._c_key = self._s_key = None
        self._self_mask_seed = b""
        self._neighbour_keys: dict[int, tuple[bytes, bytes]] = {}
        self._held_shares: dict[int, tuple[bytes, bytes]] = {}
        self._survivors: frozenset[int] | None = None  # U3 as signed in ConsistencyCheck
        self._survivor_bytes = b""
        self.mask_expansions = 0  # masks expanded for this round's input (for benchmarks)

    # --- public API ---------------------------------------------------------------------------

    def provide_input(self, input_vector: InputSource) -> None:
        """Give the client its update. May come any time before the MaskedInputRequest."""
        if self.state not in CLIENT_AWAIT[:3]:
            raise self._local(f"input provided in state {self.state.value}; too late")
        self._raw_input = input_vector
        if self.config is not None and not callable(input_vector):
            self._encode()

    def receive(self, frame: bytes, sender: int = SERVER_ID) -> list[Outgoing]:
        """Process one frame from the server; return the frames to send (zero or one)."""
        if self.state in (ClientState.ABORTED, ClientState.ERROR):
            self.ignored.add(sender, f"after the client ended ({self.state.value})")
            return []
        digest = self._digest(frame)
        if digest in self._answered.values():
            self.ignored.add(sender, "duplicate")
            return []
        try:
            msg = self._decode(frame, sender)
            if msg is None:
                return []
            out = self._step(msg, digest)
        except (RemoteProtocolError, CryptoError) as exc:
            raise self._fail(exc) from None
        return [Outgoing(SERVER_ID, encode(m)) for m in out]

    def close_phase(self) -> None:
        """The driver's deadline for the server's next request passed: the client gives up."""
        self._end("the server's next request did not arrive before the deadline")

    def peer_lost(self, peer: int = SERVER_ID) -> None:
        """The transport lost the server: the client gives up on the round."""
        self._end("the connection to the server was lost")

    @property
    def finished(self) -> bool:
        return self.state in (ClientState.DONE, ClientState.ABORTED, ClientState.ERROR)

    @property
    def phase(self) -> str:
        """The round the client is in (the next request it waits for), or its final state."""
        if self.state in CLIENT_AWAIT:
            return ROUNDS[CLIENT_AWAIT.index(self.state)].name
        return self.state.value

    # --- state that outlives the process ------------------------------------------------------

    def snapshot(self) -> bytes:
        """The client's round state as bytes, for a driver that may run each request in a new
        process (a Flower SuperNode keeps it in the node's context). It holds this client's
        private keys and held shares: keep it where the client keeps its secrets.

        Taken between requests; the input is not in it (provide it after :meth:`restore`), nor
        the ``ignored`` counts. A client that ended in an error has nothing worth keeping."""
        if self.state is ClientState.ERROR:
            raise self._local("a client that failed has no state to keep")
        if self._ring_input is not None or (self._raw_input is not None and self.config is not None):
            raise self._local("a snapshot does not carry the input: take it before provide_input()")
        config = b"" if self.config is None else encode_signed_config(self.config, b"")
        return canonical_cbor([
            SNAPSHOT_VERSION, self.id, self.state.value, config, self._session,
            list(self._advert), self._s_private,
            b"" if self._c_key is None else self._c_key.private_bytes_raw(),
            self._digest.key, sorted(self._answered.items()),
            [[v, c, s, self._pair_sessions.get(v, b"")] for v, (c, s) in sorted(self._neighbour_keys.items())],
            self._self_mask_seed,
            [[v, b, s] for v, (b, s) in sorted(self._held_shares.items())],
            None if self._survivors is None else sorted(self._survivors),
            self.abort_reason,
        ])

    @classmethod
    def restore(cls, snapshot: bytes, **kwargs) -> Client:
        """The client :meth:`snapshot` saved. ``kwargs`` are the constructor's keyword arguments
        (rng, encoder, identities, ...), given again: a snapshot holds round state, not the
        client's configuration. ``LocalProtocolError`` if the bytes are not a snapshot."""
        try:
            v = cbor2.loads(snapshot)
            if not (isinstance(v, list) and len(v) == 15 and v[0] == SNAPSHOT_VERSION):
                raise ValueError(f"expected [{SNAPSHOT_VERSION}, ...15 fields]")
            (_, client_id, state, config, session, advert, s_private, c_private, digest_key,
             answered, neighbours, self_seed, held, survivors, abort_reason) = v
            client = cls(client_id, **kwargs)
            client.state = ClientState(state)
            if config:
                client.config = decode_signed_config(config)[0]
                if hasattr(client._encoder, "prepare"):
                    client._encoder.prepare(client.config, client.id)
            client._session, client._advert = session, (advert[0], advert[1])
            client._s_private = s_private
            if s_private:
                client._c_key, client._s_key = kex.load_private(c_private), kex.load_private(s_private)
            client._digest = FrameDigest(lambda _n: digest_key)
            client._answered = {int(i): d for i, d in answered}
            client._neighbour_keys = {p: (c, s) for p, c, s, _ in neighbours}
            client._pair_sessions = {p: ps for p, _, _, ps in neighbours if ps}
            client._self_mask_seed = self_seed
            client._held_shares = {p: (b, s) for p, b, s in held}
            if survivors is not None:
                client._survivors = frozenset(survivors)
                client._survivor_bytes = keys.survivor_set_bytes(client._survivors)
            client.abort_reason = abort_reason
        except (ValueError, TypeError, KeyError, IndexError, cbor2.CBORDecodeError, MalformedMessage) as exc:
            raise LocalProtocolError(f"not a client snapshot: {exc}") from None
        return client

    # --- helpers ------------------------------------------------------------------------------

    def _round(self) -> int | None:
        return self.config.round if self.config else None

    def _where(self) -> dict:
        return dict(client=self.id, round=self._round(), state=self.state.value, phase=self.phase)

    def _local(self, text: str) -> LocalProtocolError:
        return LocalProtocolError(f"client {self.id}, round {self._round()}, {self.phase}: {text}",
                                  **self._where())

    def _refuse(self, msg: Message, text: str, kind: type[RemoteProtocolError] = InconsistentRequest):
        return kind(f"client {self.id} refuses {msg.name} in round {msg.round} ({self.phase}): {text}",
                    client=self.id, round=msg.round, state=self.state.value, phase=self.phase)

    def _fail(self, exc: SecAggError) -> SecAggError:
        if isinstance(exc, CryptoError):
            exc = InconsistentRequest(
                f"client {self.id} in round {self._round()} ({self.phase}): a cryptographic check "
                "on the server's request failed", **self._where())
        elif exc.client is None or exc.phase is None:
            exc = type(exc)(str(exc), **self._where())
        self.state = ClientState.ERROR
        self.error = exc
        return exc

    def _end(self, reason: str) -> None:
        if not self.finished:
            self.abort_reason = reason
            self.state = ClientState.ABORTED

    def _decode(self, frame: bytes, sender: int) -> Message | None:
        limits = PRE_CONFIG_LIMITS if self.config is None else Limits.for_client(self.config)
        try:
            msg = decode(frame, limits)
        except MalformedMessage as exc:
            raise MalformedMessage(
                f"client {self.id} received a malformed frame in round {self._round()} "
                f"({self.phase}): {exc}", **self._where()) from None
        if sender != SERVER_ID or not msg.FROM_SERVER:
            raise UnexpectedMessage(
                f"client {self.id} received {msg.name} from party {sender}; clients take requests "
                "from the server only", **self._where())
        if msg.recipient != self.id:
            raise self._refuse(msg, f"it is addressed to client {msg.recipient}")
        if self.config is not None and (msg.session_id, msg.round) != (
            self.config.session_id, self.config.round,
        ):
            self.ignored.add(sender, "another session or round")
            return None
        return msg

    def _step(self, msg: Message, digest: bytes) -> list[Message]:
        table = CLIENT_TRANSITIONS_AUTHENTICATED if self.config and self.config.authenticated else CLIENT_TRANSITIONS
        if isinstance(msg, Abort):
            self.abort_reason = msg.reason
            self.state = table.get((self.state, Abort), ClientState.ABORTED)
            return []
        index = ROUND_OF_REQUEST[type(msg)]
        if index in self._answered:
            raise self._refuse(msg, f"the server sent a second, different {msg.name}", Equivocation)
        next_state = table.get((self.state, type(msg)))
        if next_state is None:
            raise self._refuse(msg, f"it expected {self.phase}Request, not {msg.name}", UnexpectedMessage)
        reply = getattr(self, "_on_" + ROUNDS[index].key)(msg)
        self._answered[index] = digest
        self.state = next_state
        return [reply]

    def _header(self) -> dict:
        return {"session_id": self.config.session_id, "round": self.config.round, "sender": self.id}

    def _encode(self) -> None:
        raw = self._raw_input
        try:
            self._ring_input = self._encoder.encode(raw() if callable(raw) else raw)
        except InvalidInput as exc:
            raise InvalidInput(f"client {self.id}, round {self.config.round}: {exc}",
                               **self._where()) from None
        self._raw_input = None

    # --- rounds: one handler per row of ROUNDS ------------------------------------------------

    def _on_advertise_keys(self, msg: AdvertiseKeysRequest) -> Message:
        config = msg.config
        too_big = self.limits.fault(config)
        if too_big:
            raise self._refuse(msg, too_big)
        if self.id not in config.clients:
            raise self._refuse(msg, f"the round has clients 1..{config.num_clients}, not {self.id}")
        if config.threshold < self._min_threshold:
            raise self._refuse(
                msg, f"threshold {config.threshold} is below this client's minimum {self._min_threshold}"
            )
        if self._require_authenticated and not config.authenticated:
            raise self._refuse(msg, "the round is announced without authentication; this client "
                                    "requires signed adverts")
        if config.authenticated and (self._signing_key is None or self._identities is None
                                     or self._operator_key is None):
            raise self._local("the round is authenticated: give the client its signing_key, the "
                              "registry's identities lookup and the operator's key")
        if config.adversary.strength < self._min_adversary.strength:
            raise self._refuse(msg, f"it is planned against a {config.adversary.value} server; this "
                                    f"client demands at least {self._min_adversary.value}", WeakConfig)
        if self._operator_key is not None:
            fault = keys.config_signature_fault(config, msg.config_signature, self._operator_key)
            if fault:
                raise self._refuse(msg, fault, BadSignature)
        weakness = config.weakness()
        if weakness:
            raise self._refuse(msg, weakness, WeakConfig)
        if self._ledger is not None:
            replay = self._ledger.fault(config.session_id, config.round)
            if replay:
                raise self._refuse(msg, replay, ReplayedRound)
        self.config = config
        try:
            if hasattr(self._encoder, "prepare"):
                self._encoder.prepare(config, self.id)
            if self._raw_input is not None and not callable(self._raw_input):
                self._encode()  # bad input is refused here, before anything is sent
            # Commits to the round (a privacy budget is charged): after the input is known to be
            # usable, so a refused input costs nothing, and before anything is sent.
            self._encoder.begin_round(config, self.id)
            if self._ledger is not None:
                self._ledger.record(config.session_id, config.round)
        except LocalProtocolError as exc:
            self.config = None  # nothing was sent: the client may be given another round
            if exc.client is None:
                raise type(exc)(f"client {self.id}, round {config.round}: {exc}", client=self.id,
                                round=config.round, state=self.state.value, phase=self.phase) from None
            raise
        c_private, c_public = kex.generate_keypair(fork(self._rng, "encryption_key"))
        self._s_private, s_public = kex.generate_keypair(fork(self._rng, "mask_key"))
        self._c_key, self._s_key = kex.load_private(c_private), kex.load_private(self._s_private)
        self._session = keys.session_hash(config, msg.config_signature)
        self._advert = (c_public, s_public)
        signature = b""
        if config.authenticated:
            signature = self._signing_key.sign(keys.advert_message(self._session, self.id, c_public, s_public))
        return AdvertiseKeys(**self._header(), encryption_key=c_public, mask_key=s_public,
                             signature=signature)

    def _on_share_keys(self, msg: ShareKeysRequest) -> Message:
        config = self.config
        graph_neighbours = set(config.graph.neighbours(self.id))
        offered = [k.client for k in msg.neighbour_keys]
        strangers = sorted(set(offered) - graph_neighbours)
        if strangers:
            raise self._refuse(msg, f"clients {strangers} are not our graph neighbours")
        if len(offered) < config.threshold:
            raise self._refuse(
                msg, f"only {len(offered)} neighbours advertised keys; threshold is {config.threshold}"
            )
        if config.authenticated:
            self._identities.prefetch(offered)
        for k in msg.neighbour_keys:
            for what, key in (("encryption", k.encryption_key), ("mask", k.mask_key)):
                fault = kex.public_key_fault(key)
                if fault:
                    raise self._refuse(msg, f"the server relayed client {k.client}'s {what} key, "
                                            f"which is {fault}")
            if config.authenticated:
                fault = advert_fault(self._identities, self._session, k.client, k.encryption_key,
                                     k.mask_key, k.signature)
                if fault:
                    raise self._refuse(msg, f"the advert relayed for client {k.client}: {fault} "
                                            "(a substituted key, or a server relaying a forgery)",
                                       BadSignature)
        self._neighbour_keys = {k.client: (k.encryption_key, k.mask_key) for k in msg.neighbour_keys}
        self._pair_sessions = {
            v: keys.pair_session(self._session, self.id, self._advert, v, pair)
            for v, pair in self._neighbour_keys.items()
        }
        self._self_mask_seed = fork(self._rng, "self_mask_seed")(prg.SEED_BYTES)
        shares = shamir.split(
            [self._self_mask_seed, self._s_private], offered, config.threshold,
            fork(self._rng, "shamir"),
        )
        encrypted = tuple(
            EncryptedShares(
                peer=v,
                ciphertext=keys.seal_shares(
                    holder[0] + holder[1],
                    encryption_private_key=self._c_key,
                    recipient_key=self._neighbour_keys[v][0],
                    session=self._pair_sessions[v], sender=self.id, recipient=v,
                ),
            )
            for v, holder in zip(offered, shares)
        )
        commitment = self_mask_commitment(self._self_mask_seed, self._session, self.id)
        return ShareKeys(**self._header(), self_mask_commitment=commitment, encrypted_shares=encrypted)

    def _on_masked_input(self, msg: MaskedInputRequest) -> Message:
        config = self.config
        if self._ring_input is None and self._raw_input is None:
            raise self._local("no input: call provide_input() before the MaskedInputRequest")
        senders = [e.peer for e in msg.encrypted_shares]
        unknown = sorted(set(senders) - set(self._neighbour_keys))
        if unknown:
            raise self._refuse(msg, f"shares from clients {unknown}, whose keys we never received")
        if len(senders) < config.threshold:
            raise self._refuse(
                msg, f"only {len(senders)} neighbours shared keys; threshold is {config.threshold}, "
                "so our own secrets could not be recovered"
            )
        if self._ring_input is None:
            self._encode()
        held, complaints = {}, []
        for e in msg.encrypted_shares:
            try:
                plaintext = keys.open_shares(
                    e.ciphertext,
                    encryption_private_key=self._c_key,
                    sender_key=self._neighbour_keys[e.peer][0],
                    session=self._pair_sessions[e.peer], sender=e.peer, recipient=self.id,
                )
            except CryptoError:
                complaints.append(e.peer)  # the sender's fault (or the server's): blame, hold nothing
                continue
            held[e.peer] = (plaintext[: shamir.SHARE_BYTES], plaintext[shamir.SHARE_BYTES :])
        self._held_shares = held
        pairwise = (
            (
                keys.pairwise_mask_seed(
                    self._s_key, self._neighbour_keys[peer][1],
                    session=self._pair_sessions[peer], a=self.id, b=peer,
                ),
                keys.mask_sign(self.id, peer),
            )
            for peer in senders
        )
        masked = self._ring_input.copy()
        self.mask_expansions = apply_masks(
            masked, itertools.chain([(self._self_mask_seed, +1)], pairwise), config.bits
        )
        self._ring_input = None  # the input leaves only masked; keep no copy around
        return MaskedInput(**self._header(), complaints=tuple(complaints), bits=config.bits, masked=masked)

    def _on_consistency_check(self, msg: ConsistencyCheckRequest) -> Message:
        survivors = frozenset(msg.survivors)
        if self.id not in survivors:
            raise self._refuse(msg, "the survivor set leaves out this client, whose masked input was sent")
        if len(survivors) < self.config.threshold:
            raise self._refuse(msg, f"only {len(survivors)} survivors; threshold is {self.config.threshold}")
        self._survivors = survivors
        self._survivor_bytes = keys.survivor_set_bytes(survivors)
        signature = self._signing_key.sign(keys.survivors_message(self._session, self.id, self._survivor_bytes))
        return ConsistencyCheck(**self._header(), signature=signature)

    def _check_consistency(self, msg: UnmaskRequest) -> None:
        """Authenticated rounds: at least t clients signed the very survivor set this client
        signed, and the request agrees with it (no survivor is called dropped, or vice versa)."""
        config, u3 = self.config, self._survivors
        signers = [s.peer for s in msg.consistency]
        if len(signers) < config.threshold:
            raise self._refuse(msg, f"it carries {len(signers)} survivor-set signatures; at least "
                                    f"t = {config.threshold} are needed")
        self._identities.prefetch(c for c in signers if c in u3)
        for s in msg.consistency:
            if s.peer not in u3:
                raise self._refuse(msg, f"client {s.peer} signed a survivor set it is not in")
            try:
                verify_key = self._identities(s.peer)
            except SecAggError as exc:
                raise self._refuse(msg, f"the registry does not vouch for signer {s.peer}: {exc}",
                                   BadSignature) from None
            if not sign.verify(verify_key, keys.survivors_message(self._session, s.peer, self._survivor_bytes),
                               s.signature):
                raise self._refuse(msg, f"client {s.peer}'s signature is not over the survivor set "
                                        "this client signed (a split view)", BadSignature)
        lies = sorted(set(msg.dropped) & u3) + sorted(set(msg.survivors) - u3)
        if lies:
            raise self._refuse(msg, f"it contradicts the signed survivor set about clients {lies}")

    def _on_unmask(self, msg: UnmaskRequest) -> Message:
        if self.config.authenticated:
            self._check_consistency(msg)
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        both = sorted(survivors & dropped)
        if both:
            raise self._refuse(msg, f"it lists clients {both} as both survivor and dropped")
        if self.id in survivors | dropped:
            raise self._refuse(msg, "it lists this client as its own neighbour")
        held = set(self._held_shares)
        invented = sorted((survivors | dropped) - held)
        if invented:
            raise self._refuse(msg, f"this client holds no shares of clients {invented}")
        missing = sorted(held - survivors - dropped)
        if missing:
            raise self._refuse(msg, f"it says nothing of neighbours {missing}")
        if len(survivors) < self.config.threshold:
            raise self._refuse(
                msg, f"only {len(survivors)} surviving neighbours; threshold is {self.config.threshold}"
            )
        return UnmaskResponse(
            **self._header(),
            self_mask_shares=tuple(
                RevealedShare(peer=p, share=self._held_shares[p][0]) for p in sorted(survivors)
            ),
            key_shares=tuple(RevealedShare(peer=p, share=self._held_shares[p][1]) for p in sorted(dropped)),
        )


class IdentityLookups:
    """A party's registry lookups for one round: each client's verify key is asked once, and the
    keys a step needs are asked in one query where the registry can answer many at once.

    ``identities`` is the registry (anything with ``verify_key(client)`` and ``enrolled(clients)``,
    as ``secagg.identity.Registry``) or a bare ``client -> key`` callable. :meth:`prefetch` never
    raises: a client the bulk answer leaves out is asked again on its own when its key is needed,
    so its ``IdentityError`` (and its reason) surfaces where it did before. A refused lookup is
    not remembered."""

    def __init__(self, identities) -> None:
        self._one: Callable[[int], bytes] = getattr(identities, "verify_key", identities)
        self._many = getattr(identities, "enrolled", None)
        self._known: dict[int, bytes] = {}

    def __call__(self, client: int) -> bytes:
        key = self._known.get(client)
        if key is None:
            key = self._known[client] = self._one(client)
        return key

    def prefetch(self, clients) -> None:
        if self._many is None:
            return
        wanted = [c for c in clients if c not in self._known]
        if len(wanted) > 1:
            self._known.update(self._many(wanted))


def advert_fault(identities: Callable[[int], bytes], session: bytes, client: int,
                 encryption_key: bytes, mask_key: bytes, signature: bytes) -> str | None:
    """Why an authenticated advert does not stand, or None: the registry does not vouch for the
    signer, the signature is missing, or it does not verify over (session hash, both keys)."""
    if not signature:
        return "its advert is not signed"
    try:
        verify_key = identities(client)
    except SecAggError as exc:
        return f"the registry does not vouch for it: {exc}"
    if not sign.verify(verify_key, keys.advert_message(session, client, encryption_key, mask_key), signature):
        return "its advert's signature does not verify under its registered key"
    return None


def self_mask_commitment(seed: bytes, session: bytes, client: int) -> bytes:
    """HKDF(b_u, "self-mask-commitment", H, u, 0): binds b_u without revealing it."""
    return derive_key(seed, PURPOSE_SELF_MASK_COMMITMENT, session=session, client_a=client, client_b=0)


__all__ = ["Client", "ClientLimits", "ClientState", "SecAggError", "IdentityLookups", "advert_fault",
           "self_mask_commitment"]
