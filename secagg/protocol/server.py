"""The SecAgg+ server as a sans-IO state machine.

Theory of operation. The server runs four phases (``Phase``); in each it waits for one message
type from the clients still in the round. A phase closes when every awaited client has answered,
or when the driver calls :meth:`Server.close_phase` (its deadline passed). Whoever has not answered
by then has dropped; the tables in ``states.py`` say how each client's state moves.

Sets, in the paper's notation: U1 advertised keys, U2 shared keys, U3 sent a masked input. After
AdvertiseKeys and after ShareKeys the server prunes, repeatedly, any client left with fewer than t
live neighbours: its secrets could never be recovered, so it is told to stop (``Abort``) before
its input is mixed into the sum. That is why a dropout before MaskedInput never aborts a round
that still has enough clients.

Masked inputs are added into one accumulator as they arrive; the server never holds n vectors.
At Unmask it asks each survivor v, for every neighbour u of v in U2, for the share of u's
self-mask seed b_u (u in U3) or of u's mask private key s_u (u in U2 \\ U3), never both. It then
reconstructs all secrets in one batch, checks each recovered s_u against the public key u
advertised, and removes the masks:

    sum = acc - sum_{u in U3} PRG(b_u) - sum_{u in U2\\U3} sum_{v in N(u) & U3} sign(v, u) PRG(s_uv)

If any needed secret has fewer than t shares, the round aborts, naming the clients concerned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from secagg.codec import Limits, decode
from secagg.config import RoundConfig
from secagg.crypto import kex, shamir
from secagg.crypto.randomness import RandomSource, system_random
from secagg.errors import (
    ConfigurationError,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    RoundAborted,
    ShamirError,
    UnexpectedMessage,
)
from secagg.messages import (
    SERVER_ID,
    Abort,
    AdvertiseKeys,
    AdvertiseKeysRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    Message,
    NeighbourKeys,
    ShareKeys,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol import keys
from secagg.protocol.masking import apply_masks
from secagg.quantize import ring_dtype
from secagg.protocol.states import EXPECTED, PHASE_CLOSE, SERVER_TRANSITIONS, Phase, PeerState


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """The outcome of a completed round: the exact ring sum and who is in it."""

    config: RoundConfig
    ring_sum: np.ndarray = field(repr=False)
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    faulty: tuple[int, ...]
    mask_expansions: int = 0  # PRG expansions the server did to unmask (for benchmarks)

    @property
    def values(self) -> np.ndarray:
        """The decoded float sum of the contributors' inputs (range-quantised rounds; a privacy
        layer round is decoded by its ``DPDecoder``)."""
        return self.config.quantizer.decode(self.ring_sum, len(self.contributors))


class Server:
    """The server of one round. Drive it with :meth:`start`, :meth:`receive`, :meth:`close_phase`."""

    def __init__(
        self,
        config: RoundConfig,
        *,
        min_contributors: int | None = None,
        rng: RandomSource = system_random,
    ) -> None:
        self.config = config
        self.min_contributors = config.threshold if min_contributors is None else min_contributors
        if not 1 <= self.min_contributors <= config.num_clients:
            raise ConfigurationError(
                f"min_contributors must lie in [1, {config.num_clients}], got {self.min_contributors}"
            )
        self.phase = Phase.ADVERTISE_KEYS
        self.peers: dict[int, PeerState] = {c: PeerState.AWAIT_KEYS for c in config.clients}
        self._awaiting: set[int] = set(config.clients)  # peers the current phase waits for
        self.limits = Limits.for_config(config)
        self._rng = rng
        self._graph = config.graph
        self._started = False
        self._advertised: dict[int, NeighbourKeys] = {}  # built once, sent to every neighbour
        # recipient -> sender -> the ciphertext, already in the form forwarded to the recipient
        self._inboxes: dict[int, dict[int, EncryptedShares]] = {}
        self._accumulator = np.zeros(config.dim, dtype=ring_dtype(config.bits))
        self._u1: frozenset[int] = frozenset()
        self._u2: frozenset[int] = frozenset()
        self._u3: set[int] = set()
        self._requests: dict[int, UnmaskRequest] = {}
        self._self_mask_shares: dict[int, list[tuple[int, bytes]]] = {}
        self._key_shares: dict[int, list[tuple[int, bytes]]] = {}
        self._faulty: set[int] = set()
        self._result: RoundResult | None = None
        self._aborted: RoundAborted | None = None

    # --- public API ---------------------------------------------------------------------------

    def start(self) -> list[Message]:
        if self._started:
            raise self._local("start() called twice")
        self._started = True
        return [
            AdvertiseKeysRequest(**self._header(), recipient=c, config=self.config)
            for c in self.config.clients
        ]

    def receive_data(self, client: int, data: bytes) -> list[Message]:
        """Decode a frame that arrived on ``client``'s connection, then :meth:`receive` it."""
        try:
            msg = decode(data, self.limits)
        except MalformedMessage as exc:
            self._fault(client)
            raise MalformedMessage(
                f"client {client} sent a malformed frame in round {self.phase.value}: {exc}",
                client=client, round=self.config.round, state=self.phase.value,
            ) from None
        if msg.sender != client:
            self._fault(client)
            raise UnexpectedMessage(
                f"client {client} sent a message claiming to be from client {msg.sender}",
                client=client, round=self.config.round, state=self.phase.value,
            )
        return self.receive(msg)

    def receive(self, msg: Message) -> list[Message]:
        """Process one client message; return the messages to send (possibly a next phase's)."""
        if not self._started:
            raise self._local("receive() before start()")
        sender = msg.sender
        if sender not in self.peers:
            raise UnexpectedMessage(
                f"message from unknown client {sender} (round has clients 1..{self.config.num_clients})",
                client=sender, round=msg.round, state=self.phase.value,
            )
        if self.finished:
            raise UnexpectedMessage(
                f"client {sender} sent {msg.name} after the round ended ({self.phase.value})",
                client=sender, round=msg.round, state=self.phase.value,
            )
        state = self.peers[sender]
        try:
            if (msg.session_id, msg.round) != (self.config.session_id, self.config.round):
                raise UnexpectedMessage(
                    f"client {sender} sent {msg.name} for session {msg.session_id.hex()[:8]} round "
                    f"{msg.round}; this is session {self.config.session_id.hex()[:8]} round "
                    f"{self.config.round}"
                )
            next_state = SERVER_TRANSITIONS.get((state, type(msg)))
            if next_state is None:
                expected = EXPECTED.get(self.phase)
                raise UnexpectedMessage(
                    f"client {sender} sent {msg.name} in round {self.phase.value}; "
                    + (f"expected {expected.__name__}" if state.value.startswith("Await") and expected
                       else f"client is in state {state.value}")
                )
            self._handle(msg)
        except RemoteProtocolError as exc:
            self._fault(sender)
            text = str(exc)
            if f"round {self.phase.value}" not in text:
                text += f" (round {self.phase.value}; client {sender} is now excluded)"
            raise type(exc)(text, client=sender, round=msg.round, state=self.phase.value) from None
        self.peers[sender] = next_state
        self._awaiting.discard(sender)
        return self._maybe_close()

    def close_phase(self) -> list[Message]:
        """The current phase's deadline passed: whoever has not answered has dropped."""
        if self.phase in (Phase.COMPLETED, Phase.ABORTED):
            raise self._local(f"close_phase() in phase {self.phase.value}")
        return self._close()

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

    def _local(self, text: str) -> LocalProtocolError:
        return LocalProtocolError(f"server: {text}", round=self.config.round, state=self.phase.value)

    def _fault(self, client: int) -> None:
        if client in self.peers and self.peers[client] not in (PeerState.DROPPED, PeerState.EXCLUDED):
            self.peers[client] = PeerState.ERROR
            self._awaiting.discard(client)
            self._faulty.add(client)
            # A faulty client's answer in this phase no longer counts; one already in the sum stays.
            self._requests.pop(client, None)

    def _live_neighbours(self, client: int, members: Iterable[int] | frozenset[int]) -> list[int]:
        return [v for v in self._graph.neighbours(client) if v in members]

    def _prune(self, members: set[int]) -> tuple[set[int], list[int]]:
        """Drop, until stable, every member with fewer than t live neighbours."""
        t = self.config.threshold
        excluded = []
        changed = True
        while changed:
            changed = False
            for c in sorted(members):
                if len(self._live_neighbours(c, members)) < t:
                    members.discard(c)
                    excluded.append(c)
                    changed = True
        return members, excluded

    def _exclude(self, clients: Iterable[int], why: str) -> list[Message]:
        out = []
        for c in clients:
            self.peers[c] = PeerState.EXCLUDED
            out.append(Abort(**self._header(), recipient=c, reason=why))
        return out

    def _abort(self, reason: str, unrecoverable: Iterable[int] = ()) -> list[Message]:
        notify = [
            c for c, s in self.peers.items()
            if s not in (PeerState.DROPPED, PeerState.EXCLUDED, PeerState.ERROR)
        ]
        self._aborted = RoundAborted(
            f"round {self.config.round} aborted in {self.phase.value}: {reason}",
            round=self.config.round, state=self.phase.value, unrecoverable=unrecoverable,
        )
        self.phase = Phase.ABORTED
        self._accumulator = None  # nothing of the round survives an abort
        return [Abort(**self._header(), recipient=c, reason=self._aborted.reason) for c in notify]

    def _maybe_close(self) -> list[Message]:
        if self.finished or self._awaiting:
            return []
        return self._close()

    # --- message handling ---------------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        match msg:
            case AdvertiseKeys():
                self._advertised[msg.sender] = NeighbourKeys(
                    client=msg.sender, encryption_key=msg.encryption_key, mask_key=msg.mask_key
                )
            case ShareKeys():
                self._on_share_keys(msg)
            case MaskedInput():
                self._on_masked_input(msg)
            case UnmaskResponse():
                self._on_unmask_response(msg)

    def _on_share_keys(self, msg: ShareKeys) -> None:
        expected = self._live_neighbours(msg.sender, self._u1)
        got = [e.peer for e in msg.encrypted_shares]
        if got != expected:
            raise RemoteProtocolError(
                f"client {msg.sender} sent shares for clients {got}; expected exactly its live "
                f"neighbours {expected}"
            )
        sender = msg.sender
        for peer, ciphertext in msg.encrypted_shares:
            self._inboxes.setdefault(peer, {})[sender] = EncryptedShares(sender, ciphertext)

    def _on_masked_input(self, msg: MaskedInput) -> None:
        if msg.bits != self.config.bits or msg.masked.size != self.config.dim:
            raise RemoteProtocolError(
                f"client {msg.sender} sent a masked input of {msg.masked.size} coordinates at "
                f"{msg.bits} bits; expected {self.config.dim} at {self.config.bits} bits"
            )
        np.add(self._accumulator, msg.masked, out=self._accumulator)
        self._u3.add(msg.sender)

    def _on_unmask_response(self, msg: UnmaskResponse) -> None:
        request = self._requests.get(msg.sender)
        got_self = tuple(s.peer for s in msg.self_mask_shares)
        got_keys = tuple(s.peer for s in msg.key_shares)
        if request is None or (got_self, got_keys) != (request.survivors, request.dropped):
            raise RemoteProtocolError(
                f"client {msg.sender} answered Unmask with shares of {got_self} / {got_keys}; "
                f"the request asked for {request.survivors if request else ()} / "
                f"{request.dropped if request else ()}"
            )
        for s in msg.self_mask_shares:
            self._self_mask_shares.setdefault(s.peer, []).append((msg.sender, s.share))
        for s in msg.key_shares:
            self._key_shares.setdefault(s.peer, []).append((msg.sender, s.share))

    # --- phase transitions --------------------------------------------------------------------

    def _close(self) -> list[Message]:
        answered, awaited_next, next_phase = PHASE_CLOSE[self.phase]
        members = {c for c, s in self.peers.items() if s is answered}
        for c in self._awaiting:
            self.peers[c] = PeerState.DROPPED
        self._awaiting = set()
        if self.phase is Phase.UNMASK:
            return self._finish()
        if self.phase is Phase.MASKED_INPUT:
            # Clients in the sum stay in it whatever happens next.
            members = set(self._u3)
        closing = self.phase
        self.phase = next_phase
        if closing is not Phase.MASKED_INPUT:
            members, excluded = self._prune(members)
            out = self._exclude(
                excluded,
                f"fewer than t = {self.config.threshold} live neighbours after {closing.value}; "
                "this client's secrets could not be recovered",
            )
        else:
            out = []
        if len(members) < self.min_contributors:
            return out + self._abort(
                f"only {len(members)} clients remain after {closing.value}; "
                f"at least {self.min_contributors} are required"
            )
        for c in members:
            if self.peers[c] is answered:
                self.peers[c] = awaited_next
                self._awaiting.add(c)
        if closing is Phase.ADVERTISE_KEYS:
            self._u1 = frozenset(members)
            return out + self._share_keys_requests()
        if closing is Phase.SHARE_KEYS:
            self._u2 = frozenset(members)
            return out + self._masked_input_requests()
        return out + self._unmask_requests()

    def _share_keys_requests(self) -> list[Message]:
        return [
            ShareKeysRequest(
                **self._header(), recipient=c,
                neighbour_keys=tuple(self._advertised[v] for v in self._live_neighbours(c, self._u1)),
            )
            for c in sorted(self._u1)
        ]

    def _masked_input_requests(self) -> list[Message]:
        out = []
        for c in sorted(self._u2):
            inbox = self._inboxes.get(c, {})
            out.append(
                MaskedInputRequest(
                    **self._header(), recipient=c,
                    encrypted_shares=tuple(inbox[u] for u in self._live_neighbours(c, self._u2)),
                )
            )
        self._inboxes.clear()
        return out

    def _needed_secrets(self) -> tuple[list[int], list[int]]:
        """Survivors whose b_u is needed; dropped clients whose s_u is needed (some survivor
        neighbour included their pairwise mask)."""
        u3 = self._u3
        survivors = sorted(u3)
        dropped = sorted(
            u for u in self._u2 - u3 if any(v in u3 for v in self._graph.neighbours(u))
        )
        return survivors, dropped

    def _unmask_requests(self) -> list[Message]:
        u3, t = self._u3, self.config.threshold
        survivors, dropped = self._needed_secrets()
        # Holders of a secret are its owner's neighbours in U3 that are still answering.
        responders = {c for c in u3 if self.peers[c] is PeerState.AWAIT_UNMASK_RESPONSE}
        short = [u for u in survivors + dropped if len(self._live_neighbours(u, responders)) < t]
        if short:
            return self._abort(
                f"clients {sorted(short)} have fewer than t = {t} surviving neighbours to hold "
                "their secrets",
                unrecoverable=short,
            )
        self._requests = {
            v: UnmaskRequest(
                **self._header(), recipient=v,
                survivors=tuple(self._live_neighbours(v, u3)),
                dropped=tuple(u for u in self._live_neighbours(v, self._u2) if u not in u3),
            )
            for v in sorted(responders)
        }
        return list(self._requests.values())

    def _finish(self) -> list[Message]:
        t = self.config.threshold
        survivors, dropped = self._needed_secrets()
        short = [u for u in survivors if len(self._self_mask_shares.get(u, ())) < t] + [
            u for u in dropped if len(self._key_shares.get(u, ())) < t
        ]
        if short:
            return self._abort(
                f"fewer than t = {t} shares arrived for the secrets of clients {sorted(short)}",
                unrecoverable=short,
            )
        try:
            seeds = shamir.reconstruct_many([self._self_mask_shares[u] for u in survivors], t)
            private_keys = shamir.reconstruct_many([self._key_shares[u] for u in dropped], t)
        except ShamirError as exc:
            return self._abort(f"secret reconstruction failed: {exc}")
        wrong = [u for u, sk in zip(dropped, private_keys) if kex.public_key(sk) != self._advertised[u].mask_key]
        if wrong:
            return self._abort(
                f"the reconstructed mask keys of clients {wrong} do not match the keys they advertised",
                unrecoverable=wrong,
            )
        cfg = self.config

        def masks():
            for seed in seeds:
                yield seed, -1
            for u, sk in zip(dropped, private_keys):
                key = kex.load_private(sk)
                for v in self._live_neighbours(u, self._u3):
                    seed = keys.pairwise_mask_seed(
                        key, self._advertised[v].mask_key, session_id=cfg.session_id, round=cfg.round,
                        a=u, b=v,
                    )
                    yield seed, -keys.mask_sign(v, u)  # v added sign(v, u) * PRG(s_uv)

        total = self._accumulator
        expansions = apply_masks(total, masks(), cfg.bits)
        self._accumulator = None
        self._result = RoundResult(
            config=cfg,
            ring_sum=total,
            contributors=tuple(sorted(self._u3)),
            dropped=tuple(c for c in cfg.clients if c not in self._u3),
            faulty=tuple(sorted(self._faulty)),
            mask_expansions=expansions,
        )
        self.phase = Phase.COMPLETED
        return []
