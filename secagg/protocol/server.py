"""The SecAgg+ server as a sans-IO state machine.

Theory of operation. The server runs one phase per row of ``rounds.ROUNDS``; in each it waits for
one response type from the clients still in the round, taken in ``_accept_<key>``. A phase closes
when every awaited client has answered, or when the driver calls :meth:`Server.close_phase` (its
deadline passed); whoever has not answered by then has dropped.

Sets, in the paper's notation: U1 advertised keys, U2 shared keys, U3 sent a masked input. After
AdvertiseKeys and after ShareKeys the server prunes, repeatedly, any client left with fewer than t
live neighbours: its secrets could never be recovered, so it is told to stop (``Abort``) before
its input is mixed into the sum. That is why a dropout before MaskedInput never aborts a round
that still has enough clients.

Blame the sender, keep the round. The server never raises for a peer's fault. A frame that does
not decode, a key that is not a valid X25519 point, a complaint from a neighbour that a share
ciphertext does not open, a second different frame for one slot (equivocation), a share that does
not lie on its secret's polynomial: each excludes the client at fault (``excluded`` keeps the
typed error), and the round goes on with the others. An excluded client that had not yet sent its
masked input is treated as a dropout (its pairwise masks are removed with its key s_u); one whose
masked input is already in the sum stays in the sum (its self mask is removed with b_u).

Masked inputs are added into one accumulator as they arrive; the server never holds n vectors.
At Unmask it asks each survivor v, for every neighbour u whose shares v holds, for the share of
u's self-mask seed b_u (u in U3) or of u's mask private key s_u (u in U2 \\ U3), never both. It
then recovers all secrets in one batch, checking every share beyond the first t against the
polynomial the others define; a share that does not fit is blamed on its sender. Each recovered
b_u is checked against the commitment u sent with its shares, each s_u against the key u
advertised. A secret that cannot be recovered and verified aborts the round naming its owner: a
wrong sum is never returned.

    sum = acc - sum_{u in U3} PRG(b_u) - sum_{u in U2\\U3} sum_{v in N(u) & U3} sign(v, u) PRG(s_uv)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import chain
from operator import itemgetter
from dataclasses import dataclass, field

import numpy as np

from secagg.codec import Limits, decode, encode, encode_forwarded_shares, encode_neighbour_keys
from secagg.config import RoundConfig
from secagg.crypto import kex, shamir, sign
from secagg.crypto.digest import FrameDigest
from secagg.crypto.randomness import RandomSource, fork, system_random
from secagg.errors import (
    BadShare,
    BadSignature,
    ConfigurationError,
    Equivocation,
    InvalidPublicKey,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    RoundAborted,
    UnexpectedMessage,
)
from secagg.messages import (
    SERVER_ID,
    Abort,
    AdvertiseKeys,
    AdvertiseKeysRequest,
    ConsistencyCheck,
    ConsistencyCheckRequest,
    MaskedInput,
    Message,
    NeighbourKeys,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol import keys
from secagg.protocol.client import IdentityLookups, advert_fault, self_mask_commitment
from secagg.protocol.unmask import DroppedKey, Masks, default_unmasker
from secagg.protocol.rounds import (
    PEER_AWAIT,
    PEER_ENDED,
    PEER_SENT,
    PHASE_CLOSE,
    PHASE_CLOSE_AUTHENTICATED,
    ROUND_OF_PHASE,
    ROUND_OF_RESPONSE,
    ROUNDS,
    PeerState,
    Phase,
    phase_index,
)
from secagg.protocol.seam import Ignored, Outgoing
from secagg.quantize import ring_dtype


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """The outcome of a completed round: the exact ring sum and who is in it."""

    config: RoundConfig
    ring_sum: np.ndarray = field(repr=False)
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    excluded: tuple[int, ...] = ()
    mask_expansions: int = 0  # PRG expansions the server did to unmask (for benchmarks)

    @property
    def values(self) -> np.ndarray:
        """The decoded float sum of the contributors' inputs (range-quantised rounds; a privacy
        layer round is decoded by its ``DPDecoder``)."""
        return self.config.quantizer.decode(self.ring_sum, len(self.contributors))


class Server:
    """The server of one round: :meth:`start`, then :meth:`receive`, :meth:`close_phase` and
    :meth:`peer_lost` as the driver sees frames, deadlines and disconnects; :meth:`result`."""

    def __init__(
        self,
        config: RoundConfig,
        *,
        min_contributors: int | None = None,
        rng: RandomSource = system_random,
        identities=None,
        config_signature: bytes = b"",
        unmasker=None,
    ) -> None:
        """``identities``: the registry (a ``Registry``), or ``client -> its 32-byte Ed25519 verify
        key`` (raising a ``SecAggError`` for a client it does not vouch for); with a ``Registry``
        the round's keys are read in one query. ``config_signature``: the operator's signature
        over ``config`` (``keys.sign_config``), which the server relays. Both are required in
        authenticated rounds; the server holds no key of its own. ``unmasker``: how the last phase
        removes the masks (``secagg.protocol.unmask``; default ``default_unmasker()``: the process's
        shared pool on every core)."""
        self.config = config
        if config.authenticated and (identities is None or not config_signature):
            raise ConfigurationError("an authenticated round needs the registry's identities lookup "
                                     "and the operator's signature over the config")
        self._config_signature = config_signature
        self._unmasker = unmasker if unmasker is not None else default_unmasker()
        self._session = keys.session_hash(config, config_signature)
        self._identities = None if identities is None else IdentityLookups(identities)
        self._phase_close = PHASE_CLOSE_AUTHENTICATED if config.authenticated else PHASE_CLOSE
        self._survivor_signatures: dict[int, bytes] = {}
        self._signed_survivors = b""  # survivor_set_bytes(U3) as sent in ConsistencyCheckRequest
        self.min_contributors = config.threshold if min_contributors is None else min_contributors
        if not 1 <= self.min_contributors <= config.num_clients:
            raise ConfigurationError(
                f"min_contributors must lie in [1, {config.num_clients}], got {self.min_contributors}"
            )
        self.phase = Phase.ADVERTISE_KEYS
        self.peers: dict[int, PeerState] = {c: PEER_AWAIT[0] for c in config.clients}
        self.excluded: dict[int, RemoteProtocolError] = {}
        self.dropped_in: dict[int, Phase] = {}  # client -> the phase in which it dropped
        self.ignored = Ignored()
        self.limits = Limits.for_config(config)
        self._digest = FrameDigest(fork(rng, "frame_digest"))
        self._accepted: dict[int, list[bytes]] = {}  # client -> digests of its accepted frames
        self._awaiting: set[int] = set(config.clients)
        self._graph = config.graph
        self._started = False
        self._advertised: dict[int, NeighbourKeys] = {}
        self._commitments: dict[int, bytes] = {}
        # recipient -> sender -> the ciphertext, an opaque byte string the server only forwards
        self._inboxes: dict[int, dict[int, bytes]] = {}
        # client -> its live neighbours in U1 (ShareKeys) and in U2 (MaskedInput), ascending:
        # computed once when the phase opens, then read by every request and response of it.
        self._live1: dict[int, list[int]] = {}
        self._live2: dict[int, list[int]] = {}
        self._accumulator = np.zeros(config.dim, dtype=ring_dtype(config.bits))
        self._u1: frozenset[int] = frozenset()
        self._u2: frozenset[int] = frozenset()
        self._u3: set[int] = set()
        self._held: dict[int, frozenset[int]] = {}  # v -> neighbours whose shares v opened
        self._requests: dict[int, UnmaskRequest] = {}
        self._self_mask_shares: dict[int, dict[int, bytes]] = {}  # owner -> holder -> share
        self._key_shares: dict[int, dict[int, bytes]] = {}
        self._result: RoundResult | None = None
        self._aborted: RoundAborted | None = None

    # --- the driver seam ----------------------------------------------------------------------

    def start(self) -> list[Outgoing]:
        if self._started:
            raise self._local("start() called twice")
        self._started = True
        # A pool starts now if a round this big will use it (``ProcessUnmasker.start`` decides and
        # spawns without waiting), so its workers import while the clients work, not in the unmask phase.
        start_pool = getattr(self._unmasker, "start", None)
        if start_pool is not None:
            start_pool(self.config.num_clients * self.config.dim)
        return self._send(
            AdvertiseKeysRequest(**self._header(), recipient=c, config=self.config,
                                 config_signature=self._config_signature)
            for c in self.config.clients
        )

    def receive(self, frame: bytes, sender: int) -> list[Outgoing]:
        """A frame arrived on ``sender``'s connection. Returns the frames to send.

        Never raises for the sender's fault: a bad frame excludes the sender (``excluded``), a
        repeat or late frame is ignored (``ignored``)."""
        if not self._started:
            raise self._local("receive() before start()")
        state = self.peers.get(sender)
        if state is None:
            self.ignored.add(sender, "unknown sender")
            return []
        if self.finished:
            self.ignored.add(sender, f"after the round ended ({self.phase.value})")
            return []
        if state in PEER_ENDED:
            self.ignored.add(sender, f"from a client that left ({state.value})")
            return []
        digest = self._digest(frame)
        if digest in self._accepted.get(sender, ()):
            self.ignored.add(sender, "duplicate")
            return []
        try:
            msg = self._check(frame, sender, state)
            if msg is None:
                return []
            accused = getattr(self, "_accept_" + ROUNDS[ROUND_OF_RESPONSE[type(msg)]].key)(msg)
        except RemoteProtocolError as exc:
            return self._blame(sender, exc) + self._maybe_close()
        self._accepted.setdefault(sender, []).append(digest)
        self.peers[sender] = PEER_SENT[phase_index(self.phase)]
        self._awaiting.discard(sender)
        out = []
        for client, error in accused or ():
            if self.peers[client] not in PEER_ENDED:
                out += self._blame(client, error)
        return out + self._maybe_close()

    def close_phase(self) -> list[Outgoing]:
        """The current phase's deadline passed: whoever has not answered has dropped."""
        if self.finished:
            raise self._local(f"close_phase() in phase {self.phase.value}")
        for c in self._awaiting:
            self.peers[c] = PeerState.DROPPED
            self.dropped_in[c] = self.phase
        self._awaiting = set()
        return self._close()

    def peer_lost(self, client: int) -> list[Outgoing]:
        """The transport lost ``client`` (a disconnect, an MQTT Last Will): it has dropped."""
        if self.finished or self.peers.get(client) in (None, *PEER_ENDED):
            return []
        self.peers[client] = PeerState.DROPPED
        self.dropped_in[client] = self.phase
        self._awaiting.discard(client)  # what it already sent stays valid
        return self._maybe_close()

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.COMPLETED, Phase.ABORTED)

    def result(self) -> RoundResult:
        """The round's result. Raises ``RoundAborted`` if it aborted."""
        if self._aborted is not None:
            raise self._aborted
        if self._result is None:
            raise self._local(f"no result yet: the round is in phase {self.phase.value}")
        return self._result

    def awaiting(self) -> list[int]:
        """Clients whose answer the current phase still waits for."""
        return sorted(self._awaiting)

    def revealed_share_counts(self) -> dict[int, tuple[int, int]]:
        """The server's whole view of secrets: per client, (self-mask shares, key shares) held."""
        owners = set(self._self_mask_shares) | set(self._key_shares)
        return {
            u: (len(self._self_mask_shares.get(u, ())), len(self._key_shares.get(u, ())))
            for u in sorted(owners)
        }

    # --- helpers ------------------------------------------------------------------------------

    def _header(self) -> dict:
        return {"session_id": self.config.session_id, "round": self.config.round, "sender": SERVER_ID}

    def _send(self, messages: Iterable[Message]) -> list[Outgoing]:
        return [Outgoing(m.recipient, encode(m)) for m in messages]

    def _local(self, text: str) -> LocalProtocolError:
        return LocalProtocolError(f"server, round {self.config.round}: {text}", round=self.config.round,
                                  state=self.phase.value, phase=self.phase.value)

    def _fault(self, kind: type[RemoteProtocolError], client: int, text: str) -> RemoteProtocolError:
        return kind(f"client {client}, round {self.config.round} ({self.phase.value}): {text}",
                    client=client, round=self.config.round, state=self.peers[client].value,
                    phase=self.phase.value)

    def _check(self, frame: bytes, sender: int, state: PeerState) -> Message | None:
        """Decode a frame and place it in the round table; None if it is to be ignored."""
        try:
            msg = decode(frame, self.limits)
        except MalformedMessage as exc:
            raise self._fault(MalformedMessage, sender, f"malformed frame: {exc}") from None
        if msg.sender != sender:
            raise self._fault(UnexpectedMessage, sender, f"frame claims to be from client {msg.sender}")
        if (msg.session_id, msg.round) != (self.config.session_id, self.config.round):
            self.ignored.add(sender, "another session or round")  # a replay, not this round's fault
            return None
        index = ROUND_OF_RESPONSE.get(type(msg))
        if index is None:
            raise self._fault(UnexpectedMessage, sender, f"sent {msg.name}, which only the server sends")
        if Phase(ROUNDS[index].name) not in self._phase_close:
            raise self._fault(UnexpectedMessage, sender, f"sent {msg.name}, which this round does not have")
        current = phase_index(self.phase)
        if index > current:
            raise self._fault(UnexpectedMessage, sender,
                              f"sent {msg.name} before the server asked for it")
        if index < current or state is PEER_SENT[current]:
            raise self._fault(Equivocation, sender,
                              f"sent a second, different {msg.name} (equivocation)")
        return msg

    def _blame(self, client: int, error: RemoteProtocolError) -> list[Outgoing]:
        """Exclude ``client`` for ``error``; the round goes on without it."""
        self.excluded[client] = error
        self.peers[client] = PeerState.EXCLUDED
        self._awaiting.discard(client)
        self._forget_shares_from(client)
        notice = Abort(**self._header(), recipient=client,
                       reason=f"excluded from round {self.config.round}: {error}"[:4096])
        return self._send([notice])

    def _forget_shares_from(self, client: int) -> None:
        """A client that left the Unmask phase: none of its revealed shares is used."""
        if self.phase is Phase.UNMASK:
            for table in (self._self_mask_shares, self._key_shares):
                for shares in table.values():
                    shares.pop(client, None)

    def _live_neighbours(self, client: int, members: Iterable[int] | frozenset[int]) -> list[int]:
        return [v for v in self._graph.neighbours(client) if v in members]

    def _prune(self, members: set[int]) -> list[int]:
        """Drop from ``members``, until stable, every member with fewer than t live neighbours."""
        t = self.config.threshold
        pruned = []
        changed = True
        while changed:
            changed = False
            for c in sorted(members):
                if len(self._live_neighbours(c, members)) < t:
                    members.discard(c)
                    pruned.append(c)
                    changed = True
        return pruned

    def _abort(self, reason: str, cause: str, unrecoverable: Iterable[int] = ()) -> list[Outgoing]:
        notify = [c for c, s in self.peers.items() if s not in PEER_ENDED]
        self._aborted = RoundAborted(
            f"round {self.config.round} aborted in {self.phase.value}: {reason}",
            round=self.config.round, phase=self.phase.value, unrecoverable=unrecoverable, cause=cause,
        )
        self.phase = Phase.ABORTED
        self._accumulator = None  # nothing of the round survives an abort
        return self._send(Abort(**self._header(), recipient=c, reason=self._aborted.reason[:4096])
                          for c in notify)

    def _maybe_close(self) -> list[Outgoing]:
        if self.finished or self._awaiting:
            return []
        return self._close()

    # --- responses: one handler per row of ROUNDS ---------------------------------------------

    def _accept_advertise_keys(self, msg: AdvertiseKeys) -> None:
        for what, key in (("encryption", msg.encryption_key), ("mask", msg.mask_key)):
            fault = kex.public_key_fault(key)
            if fault:
                raise self._fault(InvalidPublicKey, msg.sender, f"its {what} key is {fault}")
        if self.config.authenticated:
            if not self._advertised:  # the first advert: read the round's keys in one query
                self._identities.prefetch(self._awaiting)
            fault = advert_fault(self._identities, self._session, msg.sender, msg.encryption_key,
                                 msg.mask_key, msg.signature)
            if fault:
                raise self._fault(BadSignature, msg.sender, fault)
        elif msg.signature:  # SPEC 6: empty when not authenticated; relayed, it would break ShareKeysRequest
            raise self._fault(UnexpectedMessage, msg.sender, "signed its advert in a round that is not authenticated")
        self._advertised[msg.sender] = NeighbourKeys(
            client=msg.sender, encryption_key=msg.encryption_key, mask_key=msg.mask_key,
            signature=msg.signature,
        )

    def _accept_share_keys(self, msg: ShareKeys) -> None:
        expected = self._live1[msg.sender]
        got = list(map(itemgetter(0), msg.encrypted_shares))
        if got != expected:
            raise self._fault(UnexpectedMessage, msg.sender,
                              f"sent shares for clients {got}; expected exactly its live neighbours "
                              f"{expected}")
        self._commitments[msg.sender] = msg.self_mask_commitment
        sender, inboxes = msg.sender, self._inboxes
        for peer, ciphertext in msg.encrypted_shares:
            inboxes[peer][sender] = ciphertext

    def _accept_masked_input(self, msg: MaskedInput) -> list[tuple[int, RemoteProtocolError]]:
        sender = msg.sender
        if msg.bits != self.config.bits or msg.masked.size != self.config.dim:
            raise self._fault(UnexpectedMessage, sender,
                              f"sent a masked input of {msg.masked.size} coordinates at {msg.bits} "
                              f"bits; expected {self.config.dim} at {self.config.bits} bits")
        forwarded = set(self._live2[sender])
        strangers = sorted(set(msg.complaints) - forwarded)
        if strangers:
            raise self._fault(UnexpectedMessage, sender,
                              f"complains about clients {strangers}, whose shares it was never sent")
        np.add(self._accumulator, msg.masked, out=self._accumulator)
        self._u3.add(sender)
        self._held[sender] = frozenset(forwarded - set(msg.complaints))
        # The server cannot open the ciphertext; it takes the complaint at its word (SPEC 5.1).
        return [(w, self._fault(BadShare, w, f"client {sender} reports that its share ciphertext "
                                             "does not open")) for w in msg.complaints]

    def _accept_consistency_check(self, msg: ConsistencyCheck) -> None:
        message = keys.survivors_message(self._session, msg.sender, self._signed_survivors)
        if not sign.verify(self._identities(msg.sender), message, msg.signature):
            raise self._fault(BadSignature, msg.sender, "its signature is not over the survivor set it was sent")
        self._survivor_signatures[msg.sender] = msg.signature

    def _accept_unmask(self, msg: UnmaskResponse) -> None:
        request = self._requests.get(msg.sender)
        got_self = tuple(s.peer for s in msg.self_mask_shares)
        got_keys = tuple(s.peer for s in msg.key_shares)
        if request is None or (got_self, got_keys) != (request.survivors, request.dropped):
            raise self._fault(UnexpectedMessage, msg.sender,
                              f"answered Unmask with shares of {got_self} / {got_keys}; the request "
                              f"asked for {request.survivors if request else ()} / "
                              f"{request.dropped if request else ()}")
        for s in msg.self_mask_shares:
            self._self_mask_shares.setdefault(s.peer, {})[msg.sender] = s.share
        for s in msg.key_shares:
            self._key_shares.setdefault(s.peer, {})[msg.sender] = s.share

    # --- phase transitions --------------------------------------------------------------------

    def _close(self) -> list[Outgoing]:
        closing = self.phase
        sent, awaited_next, next_phase = self._phase_close[closing]
        out = getattr(self, "_close_" + ROUND_OF_PHASE[closing].key)()
        if self.finished:
            return out
        members = {c for c, s in self.peers.items() if s is sent}
        if closing is Phase.MASKED_INPUT:
            members = {c for c in self._u3 if self.peers[c] is sent}
        if ROUND_OF_PHASE[closing].prunes:
            pruned = self._prune(members)
            for c in pruned:
                self.peers[c] = PeerState.PRUNED
            out += self._send(
                Abort(**self._header(), recipient=c,
                      reason=f"fewer than t = {self.config.threshold} live neighbours after "
                             f"{closing.value}; this client's secrets could not be recovered")
                for c in pruned
            )
        in_sum = closing in (Phase.MASKED_INPUT, Phase.CONSISTENCY_CHECK)
        contributors = len(self._u3) if in_sum else len(members)
        if next_phase is not Phase.COMPLETED and contributors < self.min_contributors:
            return out + self._abort(
                f"only {contributors} clients remain after {closing.value}; "
                f"at least {self.min_contributors} are required", "too_few_clients",
            )
        self.phase = next_phase
        for c in members:
            self.peers[c] = awaited_next
        self._awaiting = set(members)
        return out + getattr(self, "_open_" + ROUND_OF_PHASE[next_phase].key)(members)

    def _close_advertise_keys(self) -> list[Outgoing]:
        return []

    def _close_share_keys(self) -> list[Outgoing]:
        return []

    def _close_masked_input(self) -> list[Outgoing]:
        return []

    def _close_consistency_check(self) -> list[Outgoing]:
        return []

    def _open_consistency_check(self, members: set[int]) -> list[Outgoing]:
        self._signed_survivors = keys.survivor_set_bytes(self._u3)
        survivors = tuple(sorted(self._u3))
        return self._send(ConsistencyCheckRequest(**self._header(), recipient=c, survivors=survivors)
                          for c in sorted(members))

    def _close_unmask(self) -> list[Outgoing]:
        return self._finish()

    def _open_share_keys(self, members: set[int]) -> list[Outgoing]:
        self._u1 = frozenset(members)
        self._live1 = {c: self._live_neighbours(c, self._u1) for c in sorted(self._u1)}
        self._inboxes = {c: {} for c in self._u1}
        # Each frame straight from the columns (codec.encode_neighbour_keys: the bytes of the
        # ShareKeysRequest), each advert's keys joined once, not once per neighbour.
        keys = {c: a.encryption_key + a.mask_key for c, a in self._advertised.items() if c in self._u1}
        signatures = {c: self._advertised[c].signature for c in keys}
        session_id, round_ = self.config.session_id, self.config.round
        return [
            Outgoing(c, encode_neighbour_keys(session_id=session_id, round=round_, recipient=c, clients=live,
                                              keys=list(map(keys.__getitem__, live)),
                                              signatures=list(map(signatures.__getitem__, live))))
            for c, live in self._live1.items()
        ]

    def _open_masked_input(self, members: set[int]) -> list[Outgoing]:
        self._u2 = frozenset(members)
        self._live2 = {c: self._live_neighbours(c, self._u2) for c in sorted(self._u2)}
        # Each frame straight from the columns (codec.encode_forwarded_shares: the bytes of the
        # MaskedInputRequest), no record per forwarded share.
        session_id, round_ = self.config.session_id, self.config.round
        out = [
            Outgoing(c, encode_forwarded_shares(session_id=session_id, round=round_, recipient=c, senders=senders,
                                                ciphertexts=list(map(self._inboxes[c].__getitem__, senders))))
            for c, senders in self._live2.items()
        ]
        self._inboxes.clear()
        self._live1 = {}
        return out

    def _needed_secrets(self) -> tuple[list[int], list[int]]:
        """Contributors whose b_u is needed; U2 members outside the sum whose s_u is needed
        (some contributor included their pairwise mask)."""
        u3 = self._u3
        survivors = sorted(u3)
        dropped = sorted(u for u in self._u2 - u3 if any(v in u3 for v in self._graph.neighbours(u)))
        return survivors, dropped

    def _open_unmask(self, members: set[int]) -> list[Outgoing]:
        t = self.config.threshold
        survivors, dropped = self._needed_secrets()
        # v holds u's shares iff u is in held[v] (its live neighbours in U2 whose ciphertext opened)
        holders = Counter(chain.from_iterable(self._held.get(v, ()) for v in members))
        short = [u for u in survivors + dropped if holders[u] < t]
        if short:
            return self._abort(
                f"clients {sorted(short)} have fewer than t = {t} surviving neighbours holding "
                "their shares", "too_few_holders", unrecoverable=short,
            )
        u3 = self._u3
        consistency: tuple[SurvivorSignature, ...] = ()
        if self.config.authenticated:
            signed = sorted(c for c in self._survivor_signatures if c in members)
            if len(signed) < t:
                return self._abort(f"only {len(signed)} clients signed the survivor set; at least "
                                   f"t = {t} are needed", "too_few_signatures")
            consistency = tuple(SurvivorSignature(c, self._survivor_signatures[c]) for c in signed[:t])
        # held[v] lies within v's live neighbours in U2, so these are its neighbours in U3 and in
        # U2 \ U3 whose shares it holds, ascending.
        self._requests = {
            v: UnmaskRequest(
                **self._header(), recipient=v,
                survivors=tuple(sorted(self._held[v] & u3)),
                dropped=tuple(sorted(self._held[v] - u3)),
                consistency=consistency,
            )
            for v in sorted(members)
        }
        self._live2 = {}
        return self._send(self._requests.values())

    def _keys_of(self, client: int) -> tuple[bytes, bytes]:
        advert = self._advertised[client]
        return advert.encryption_key, advert.mask_key

    def _verified(self, owner: int, secret: bytes, is_seed: bool) -> bool:
        if is_seed:
            return self_mask_commitment(secret, self._session, owner) == self._commitments[owner]
        return kex.public_key(secret) == self._advertised[owner].mask_key

    def _finish(self) -> list[Outgoing]:
        """Recover every needed secret, blaming holders of shares that do not fit; then unmask.

        A holder is blamed only when the secret its share contradicts was recovered AND verified
        (against the owner's commitment or advertised key), so a decoding that went wrong can
        abort the round but never frames an honest holder."""
        t = self.config.threshold
        survivors, dropped = self._needed_secrets()
        owners = [(u, True) for u in survivors] + [(u, False) for u in dropped]
        out: list[Outgoing] = []
        while True:
            tables = [(self._self_mask_shares if seed else self._key_shares).get(u, {}) for u, seed in owners]
            recoveries = shamir.recover_many([sorted(tb.items()) for tb in tables], t)
            culprits: dict[int, str] = {}
            failed: dict[int, str] = {}
            for (u, seed), rec in zip(owners, recoveries):
                if rec.secret is None:
                    failed[u] = rec.reason or "too few consistent shares"
                elif not self._verified(u, rec.secret, seed):
                    failed[u] = ("the recovered secret does not match what the client committed to "
                                 "(shares altered consistently, or dealt inconsistently)")
                else:
                    for holder in rec.bad:
                        culprits.setdefault(holder, f"its share of client {u}'s "
                                            f"{'self-mask seed' if seed else 'mask key'} does not lie "
                                            "on the polynomial of the other shares")
            culprits = {h: why for h, why in culprits.items() if self.peers[h] is not PeerState.EXCLUDED}
            if culprits:
                for holder, why in sorted(culprits.items()):
                    out += self._blame(holder, self._fault(BadShare, holder, why))
                continue  # without the culprits' shares, a failed secret may now be recovered
            if failed:
                return out + self._abort(
                    "could not recover the secrets of clients "
                    + "; ".join(f"{u}: {why}" for u, why in sorted(failed.items())),
                    "unrecoverable_secret", unrecoverable=failed,
                )
            break
        seeds = [rec.secret for rec in recoveries[: len(survivors)]]
        private_keys = [rec.secret for rec in recoveries[len(survivors):]]
        cfg = self.config
        # v added sign(v, u) * PRG(s_uv) for each dropped neighbour u: the unmasker derives s_uv
        # from u's recovered key (on the pool's workers when there are many pairs).
        masks = Masks(self._session, ready=[(seed, -1) for seed in seeds], dropped=tuple(
            DroppedKey(u, sk, self._keys_of(u),
                       tuple((v, *self._keys_of(v)) for v in self._live_neighbours(u, self._u3)))
            for u, sk in zip(dropped, private_keys)))

        total = self._accumulator
        expansions = self._unmasker(total, masks, cfg.bits)
        self._accumulator = None
        self._result = RoundResult(
            config=cfg,
            ring_sum=total,
            contributors=tuple(sorted(self._u3)),
            dropped=tuple(c for c in cfg.clients if c not in self._u3),
            excluded=tuple(sorted(self.excluded)),
            mask_expansions=expansions,
        )
        self.phase = Phase.COMPLETED
        return out
