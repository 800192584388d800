"""The SecAgg+ client as a sans-IO state machine: a message goes in, the messages to send come out.

Theory of operation (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020, Alg. 2):

1. AdvertiseKeysRequest: check the announced configuration, make two X25519 key pairs: c (to
   encrypt shares) and s (to agree pairwise mask seeds). Send both public keys.
2. ShareKeysRequest: check that the keys are those of graph neighbours and that there are at least
   t of them. Draw the self-mask seed b; Shamir-share b and the mask private key s t-of-k among the
   neighbours; encrypt each neighbour's pair of shares under a key agreed with its c key.
3. MaskedInputRequest: decrypt the shares addressed to us; the senders are the neighbours whose
   masks we include. Send y = x + PRG(b) + sum_v +-PRG(s_uv) mod 2^b.
4. UnmaskRequest: for each neighbour listed as a survivor reveal our share of its b; for each one
   listed as dropped, our share of its s. Refuse a request that lists a peer as both, omits or
   invents a peer, or leaves fewer than t survivors: an honest client never reveals both secrets of
   one peer, which is what keeps a surviving client's input hidden (Bonawitz et al., Sec. 4).

The client never does I/O, never reads a clock and draws randomness only from the injected source.
"""

from __future__ import annotations

import itertools

import numpy as np

from secagg.codec import DEFAULT_LIMITS, Limits, decode
from secagg.config import RoundConfig
from secagg.crypto import kex, prg, shamir
from secagg.crypto.randomness import RandomSource, system_random
from secagg.errors import (
    ConfigurationError,
    CryptoError,
    InconsistentRequest,
    InvalidInput,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    SecAggError,
    UnexpectedMessage,
)
from secagg.messages import (
    Abort,
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
from secagg.protocol import keys
from secagg.protocol.masking import apply_masks
from secagg.protocol.states import CLIENT_TRANSITIONS, ClientState


class Client:
    """One client of one round. Feed it server messages with :meth:`receive`."""

    def __init__(
        self,
        client_id: int,
        input_vector: np.ndarray | None = None,
        *,
        rng: RandomSource = system_random,
        min_threshold: int = 2,
        encoder=None,
    ) -> None:
        """``encoder``: an optional privacy pipeline (``secagg.privacy.DPEncoder``) that turns the
        update into a ring vector; without one the round's range quantiser is used."""
        if not isinstance(client_id, int) or client_id < 1:
            raise ConfigurationError(f"client id must be a positive integer, got {client_id!r}")
        self.id = client_id
        self.state = ClientState.AWAIT_CONFIG
        self.config: RoundConfig | None = None
        self.abort_reason: str | None = None
        self._rng = rng
        self._min_threshold = min_threshold
        self._raw_input = input_vector
        self._encoder = encoder
        self.quantized_input: np.ndarray | None = None
        self._s_private = b""  # raw, because it is Shamir-shared
        self._c_key = self._s_key = None
        self._neighbour_keys: dict[int, tuple[bytes, bytes]] = {}
        self._held_shares: dict[int, tuple[bytes, bytes]] = {}
        self._revealed: dict[int, str] = {}
        self.mask_expansions = 0  # masks expanded for this round's input (for benchmarks)

    # --- public API ---------------------------------------------------------------------------

    def provide_input(self, input_vector: np.ndarray) -> None:
        """Give the client its update. May come any time before the MaskedInputRequest."""
        if self.state not in (
            ClientState.AWAIT_CONFIG,
            ClientState.AWAIT_SHARE_KEYS_REQUEST,
            ClientState.AWAIT_MASKED_INPUT_REQUEST,
        ):
            raise self._local(f"input provided in state {self.state.value}; too late")
        self._raw_input = input_vector
        if self.config is not None:
            self._quantize()

    def receive_data(self, data: bytes) -> list[Message]:
        """Decode a frame from the server (under the round's size limits), then :meth:`receive` it."""
        limits = DEFAULT_LIMITS if self.config is None else Limits.for_config(self.config)
        try:
            msg = decode(data, limits)
        except MalformedMessage as exc:
            where = self.state.value
            self.state = ClientState.ERROR
            raise MalformedMessage(
                f"client {self.id} received a malformed frame in state {where}: {exc}",
                client=self.id, round=self._round(), state=where,
            ) from None
        return self.receive(msg)

    def receive(self, msg: Message) -> list[Message]:
        """Process one server message; return the messages to send (zero or one)."""
        next_state = CLIENT_TRANSITIONS.get((self.state, type(msg)))
        try:
            self._check_addressing(msg)
            if next_state is None:
                raise UnexpectedMessage(
                    f"client {self.id} received {msg.name} in state {self.state.value}",
                    client=self.id, round=msg.round, state=self.state.value,
                )
            out = self._dispatch(msg)
        except RemoteProtocolError:
            self.state = ClientState.ERROR
            raise
        except CryptoError as exc:
            self.state = ClientState.ERROR
            raise InconsistentRequest(
                f"client {self.id} in round {msg.round}: shares from the server do not decrypt",
                client=self.id, round=msg.round, state=ClientState.ERROR.value,
            ) from exc
        self.state = next_state
        return out

    @property
    def finished(self) -> bool:
        return self.state in (ClientState.DONE, ClientState.ABORTED, ClientState.ERROR)

    # --- helpers ------------------------------------------------------------------------------

    def _round(self) -> int | None:
        return self.config.round if self.config else None

    def _local(self, text: str) -> LocalProtocolError:
        return LocalProtocolError(
            f"client {self.id}: {text}", client=self.id, round=self._round(), state=self.state.value
        )

    def _refuse(self, msg: Message, text: str) -> InconsistentRequest:
        return InconsistentRequest(
            f"client {self.id} refuses {msg.name} in round {msg.round}: {text}",
            client=self.id, round=msg.round, state=self.state.value,
        )

    def _check_addressing(self, msg: Message) -> None:
        if not msg.FROM_SERVER:
            raise UnexpectedMessage(
                f"client {self.id} received {msg.name}, which only clients send",
                client=self.id, round=msg.round, state=self.state.value,
            )
        if msg.recipient != self.id:
            raise self._refuse(msg, f"it is addressed to client {msg.recipient}")
        if self.config is not None and (msg.session_id, msg.round) != (
            self.config.session_id, self.config.round,
        ):
            raise UnexpectedMessage(
                f"client {self.id} received {msg.name} for session {msg.session_id.hex()[:8]} "
                f"round {msg.round}; expected session {self.config.session_id.hex()[:8]} "
                f"round {self.config.round}",
                client=self.id, round=msg.round, state=self.state.value,
            )

    def _dispatch(self, msg: Message) -> list[Message]:
        match msg:
            case AdvertiseKeysRequest():
                return self._on_advertise(msg)
            case ShareKeysRequest():
                return self._on_share_keys(msg)
            case MaskedInputRequest():
                return self._on_masked_input(msg)
            case UnmaskRequest():
                return self._on_unmask(msg)
            case Abort():
                self.abort_reason = msg.reason
                return []
        raise AssertionError(f"unhandled {msg.name}")  # unreachable: the table filters

    def _header(self) -> dict:
        return {"session_id": self.config.session_id, "round": self.config.round, "sender": self.id}

    def _quantize(self) -> None:
        try:
            if self._encoder is not None:
                self.quantized_input = self._encoder.encode(self._raw_input)
            else:
                self.quantized_input = self.config.quantizer.encode(
                    self._raw_input, dim=self.config.dim, rng=self._rng
                )
            self._raw_input = None
        except InvalidInput as exc:
            raise InvalidInput(
                f"client {self.id}, round {self.config.round}: {exc}",
                client=self.id, round=self.config.round, state=self.state.value,
            ) from None

    # --- rounds -------------------------------------------------------------------------------

    def _on_advertise(self, msg: AdvertiseKeysRequest) -> list[Message]:
        config = msg.config
        if self.id not in config.clients:
            raise self._refuse(msg, f"the round has clients 1..{config.num_clients}, not {self.id}")
        if config.threshold < self._min_threshold:
            raise self._refuse(
                msg, f"threshold {config.threshold} is below this client's minimum {self._min_threshold}"
            )
        if self._encoder is None and config.levels == 0:
            raise self._refuse(msg, "the round expects privacy-layer encodings and this client has no encoder")
        self.config = config
        if self._raw_input is not None:
            self._quantize()  # bad input is refused here, before anything is sent
        if self._encoder is not None:
            # Checks the plan matches and charges the privacy budget: after the input is known to
            # be usable (a refused input costs no budget), before anything is sent.
            self._encoder.begin_round(config, self.id)
        c_private, c_public = kex.generate_keypair(self._rng)
        self._s_private, s_public = kex.generate_keypair(self._rng)
        self._c_key, self._s_key = kex.load_private(c_private), kex.load_private(self._s_private)
        return [AdvertiseKeys(**self._header(), encryption_key=c_public, mask_key=s_public)]

    def _on_share_keys(self, msg: ShareKeysRequest) -> list[Message]:
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
        self._neighbour_keys = {k.client: (k.encryption_key, k.mask_key) for k in msg.neighbour_keys}
        self._self_mask_seed = self._rng(prg.SEED_BYTES)
        shares = shamir.split(
            [self._self_mask_seed, self._s_private], offered, config.threshold, self._rng
        )
        encrypted = tuple(
            EncryptedShares(
                peer=v,
                ciphertext=keys.seal_shares(
                    holder[0] + holder[1],
                    encryption_private_key=self._c_key,
                    recipient_key=self._neighbour_keys[v][0],
                    session_id=config.session_id, round=config.round, sender=self.id, recipient=v,
                ),
            )
            for v, holder in zip(offered, shares)
        )
        return [ShareKeys(**self._header(), encrypted_shares=encrypted)]

    def _on_masked_input(self, msg: MaskedInputRequest) -> list[Message]:
        config = self.config
        if self.quantized_input is None:
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
        held = {}
        for e in msg.encrypted_shares:
            plaintext = keys.open_shares(
                e.ciphertext,
                encryption_private_key=self._c_key,
                sender_key=self._neighbour_keys[e.peer][0],
                session_id=config.session_id, round=config.round, sender=e.peer, recipient=self.id,
            )
            held[e.peer] = (plaintext[: shamir.SHARE_BYTES], plaintext[shamir.SHARE_BYTES :])
        self._held_shares = held
        pairwise = (
            (
                keys.pairwise_mask_seed(
                    self._s_key, self._neighbour_keys[peer][1],
                    session_id=config.session_id, round=config.round, a=self.id, b=peer,
                ),
                keys.mask_sign(self.id, peer),
            )
            for peer in senders
        )
        masked = self.quantized_input.copy()
        self.mask_expansions = apply_masks(
            masked, itertools.chain([(self._self_mask_seed, +1)], pairwise), config.bits
        )
        self.quantized_input = None  # the input leaves only masked; keep no copy around
        return [MaskedInput(**self._header(), bits=config.bits, masked=masked)]

    def _on_unmask(self, msg: UnmaskRequest) -> list[Message]:
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        both = sorted(survivors & dropped)
        if both:
            raise self._refuse(msg, f"it lists clients {both} as both survivor and dropped")
        if self.id in survivors | dropped:
            raise self._refuse(msg, "it lists this client as its own neighbour")
        held = set(self._held_shares)
        invented = sorted((survivors | dropped) - held)
        if invented:
            raise self._refuse(msg, f"clients {invented} never shared keys with this client")
        missing = sorted(held - survivors - dropped)
        if missing:
            raise self._refuse(msg, f"it says nothing of neighbours {missing}")
        if len(survivors) < self.config.threshold:
            raise self._refuse(
                msg, f"only {len(survivors)} surviving neighbours; threshold is {self.config.threshold}"
            )
        for peer in survivors:
            if self._revealed.get(peer, "self-mask") != "self-mask":
                raise self._refuse(msg, f"the key share of client {peer} was revealed already")
        for peer in dropped:
            if self._revealed.get(peer, "key") != "key":
                raise self._refuse(msg, f"the self-mask share of client {peer} was revealed already")
        self._revealed.update({p: "self-mask" for p in survivors} | {p: "key" for p in dropped})
        return [
            UnmaskResponse(
                **self._header(),
                self_mask_shares=tuple(
                    RevealedShare(peer=p, share=self._held_shares[p][0]) for p in sorted(survivors)
                ),
                key_shares=tuple(
                    RevealedShare(peer=p, share=self._held_shares[p][1]) for p in sorted(dropped)
                ),
            )
        ]


__all__ = ["Client", "ClientState", "SecAggError"]
