"""The protocol's messages: frozen, typed values, validated on construction.

Every message names its session, round and sender (the server is sender 0); server-to-client
messages also name their recipient. Lists keyed by client id are strictly ascending, so a peer
cannot appear twice and every message has exactly one canonical encoding. The wire codec lives in
``secagg.codec``; nothing here knows about bytes on the wire.

Rounds, in order (SPEC.md, "Rounds"): AdvertiseKeys -> ShareKeys -> MaskedInput -> Unmask.
A ConsistencyCheck round (signed survivor lists, Bonawitz et al. 2017, Sec. 6) will sit between
MaskedInput and Unmask in the authenticated variant; it has message type codes reserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import ClassVar, NamedTuple

import numpy as np

from secagg.config import RoundConfig
from secagg.crypto.aead import TAG_BYTES
from secagg.crypto.kdf import SESSION_ID_BYTES
from secagg.crypto.kex import KEY_BYTES
from secagg.crypto.sign import SIGNATURE_BYTES
from secagg.crypto.shamir import SHARE_BYTES
from secagg.errors import MalformedMessage
from secagg.quantize import MAX_BITS, ring_dtype

SERVER_ID = 0
MAX_CLIENT_ID = 2**32 - 1
SHARE_PLAINTEXT_BYTES = 2 * SHARE_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + TAG_BYTES
COMMITMENT_BYTES = 32
MAX_REASON_CHARS = 4096


def _fail(message: Message | None, text: str) -> MalformedMessage:
    if message is None:
        return MalformedMessage(text)
    return MalformedMessage(
        f"{type(message).__name__} from {_party(message.sender)} in round {message.round}: {text}",
        client=message.sender,
        round=message.round,
    )


def _party(cid: int) -> str:
    return "the server" if cid == SERVER_ID else f"client {cid}"


def _is_uint(value: object, high: int) -> bool:
    return type(value) is int and 0 <= value <= high


# Long id tuples already checked, by identity: the server puts one survivor set (up to n ids) in
# every client's ConsistencyCheckRequest and UnmaskRequest. The tuple is kept alive here, so its
# id cannot be reused by another object while it is remembered; tuples are immutable.
_CHECKED: dict[int, tuple[int, ...]] = {}
_CHECKED_MIN_LENGTH = 64
_INT_ONLY = {int}
_BYTES_ONLY = {bytes}


def _check_ascending(msg: Message, name: str, ids: tuple[int, ...]) -> None:
    if _CHECKED.get(id(ids)) is ids:
        return
    # Fast path, in C loops (a round checks n * k ids): plain ints, strictly ascending (sorted
    # and no repeats), within (0, MAX_CLIENT_ID].
    if not ids or (set(map(type, ids)) == _INT_ONLY and len(set(ids)) == len(ids) and list(ids) == sorted(ids)):
        if not ids or (ids[0] > SERVER_ID and ids[-1] <= MAX_CLIENT_ID):
            if len(ids) >= _CHECKED_MIN_LENGTH and type(ids) is tuple:
                if len(_CHECKED) >= 8:
                    _CHECKED.clear()
                _CHECKED[id(ids)] = ids
            return
    for cid in ids:
        if not _is_uint(cid, MAX_CLIENT_ID) or cid == SERVER_ID:
            raise _fail(msg, f"{name} holds an invalid client id {cid!r}")
    raise _fail(msg, f"{name} must list client ids strictly ascending (no repeats)")


def _check_bytes(msg: Message, name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise _fail(msg, f"{name} must be {length} bytes, got {got}")


def _check_all_bytes(msg: Message, what: str, items, length: int) -> None:
    """Every item's payload (its second field) is ``length`` bytes; the error names the peer."""
    payloads = list(map(itemgetter(1), items))
    if not payloads or (set(map(type, payloads)) == _BYTES_ONLY and set(map(len, payloads)) == {length}):
        return
    for peer, value in items:
        _check_bytes(msg, f"{what} of peer {peer}", value, length)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    TYPE: ClassVar[int] = -1
    FROM_SERVER: ClassVar[bool] = False

    session_id: bytes
    round: int
    sender: int

    def __post_init__(self) -> None:
        if not _is_uint(self.round, 2**64 - 1):
            raise _fail(None, f"{type(self).__name__}: round must be a 64-bit unsigned integer")
        if not _is_uint(self.sender, MAX_CLIENT_ID):
            raise _fail(None, f"{type(self).__name__}: sender must be a 32-bit unsigned integer")
        _check_bytes(self, "session_id", self.session_id, SESSION_ID_BYTES)
        if self.FROM_SERVER != (self.sender == SERVER_ID):
            raise _fail(self, "sender does not match the message's direction")
        recipient = getattr(self, "recipient", None)
        if self.FROM_SERVER and (not _is_uint(recipient, MAX_CLIENT_ID) or recipient == SERVER_ID):
            raise _fail(self, f"recipient must be a client id, got {recipient!r}")

    @property
    def name(self) -> str:
        return type(self).__name__


# --- server -> client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeysRequest(Message):
    """Round 0: the server announces the round's public configuration, in authenticated rounds
    with the operator's signature over it (``keys.config_message``), which the server relays."""

    TYPE: ClassVar[int] = 1
    FROM_SERVER: ClassVar[bool] = True
    recipient: int
    config: RoundConfig
    config_signature: bytes = b""

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if not isinstance(self.config, RoundConfig):
            raise _fail(self, "config must be a RoundConfig")
        if not isinstance(self.config_signature, bytes) or len(self.config_signature) not in (0, SIGNATURE_BYTES):
            raise _fail(self, f"config_signature must be {SIGNATURE_BYTES} bytes or absent")
        if (self.config.session_id, self.config.round) != (self.session_id, self.round):
            raise _fail(self, "config names another session or round than the message")


class NeighbourKeys(NamedTuple):
    """A neighbour's two public keys, and in authenticated rounds its signature over them.
    Per-peer records are NamedTuples: immutable and cheap, since a round builds n * k of them."""

    client: int
    encryption_key: bytes
    mask_key: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeysRequest(Message):
    """Round 1: the public keys of the recipient's neighbours that advertised."""

    TYPE: ClassVar[int] = 3
    FROM_SERVER: ClassVar[bool] = True
    recipient: int
    neighbour_keys: tuple[NeighbourKeys, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        keys = self.neighbour_keys
        _check_ascending(self, "neighbour_keys", tuple(map(_CLIENT, keys)))
        encryption, mask, signatures = (list(map(get, keys)) for get in (_ENCRYPTION, _MASK, _SIGNATURE))
        if keys and not (set(map(type, encryption + mask)) == _BYTES_ONLY
                         and set(map(len, encryption + mask)) == {KEY_BYTES}):
            for k in keys:
                _check_bytes(self, f"encryption key of client {k.client}", k.encryption_key, KEY_BYTES)
                _check_bytes(self, f"mask key of client {k.client}", k.mask_key, KEY_BYTES)
        if set(map(type, signatures)) <= _BYTES_ONLY:
            lengths = set(map(len, signatures))
        else:
            lengths = {len(sig) if type(sig) is bytes else -1 for sig in signatures}
        if len(lengths) > 1 or not lengths <= {0, SIGNATURE_BYTES}:
            raise _fail(self, f"signatures must all be {SIGNATURE_BYTES} bytes or all absent")


_CLIENT, _ENCRYPTION, _MASK, _SIGNATURE = (itemgetter(i) for i in range(4))
_PEER = _CLIENT  # the first field of every per-peer record


class EncryptedShares(NamedTuple):
    """Shares of one client's two secrets for one peer, under AES-GCM.

    In ShareKeys ``peer`` is the recipient; in MaskedInputRequest it is the original sender.
    """

    peer: int
    ciphertext: bytes


def _check_ciphertexts(msg: Message, items: tuple[EncryptedShares, ...]) -> None:
    _check_ascending(msg, "encrypted_shares", tuple(map(_PEER, items)))
    _check_all_bytes(msg, "ciphertext", items, SHARE_CIPHERTEXT_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInputRequest(Message):
    """Round 2: the shares addressed to the recipient by neighbours that completed ShareKeys."""

    TYPE: ClassVar[int] = 5
    FROM_SERVER: ClassVar[bool] = True
    recipient: int
    encrypted_shares: tuple[EncryptedShares, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_ciphertexts(self, self.encrypted_shares)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyCheckRequest(Message):
    """Authenticated rounds, after MaskedInput: the set U3 of clients whose input is in the sum."""

    TYPE: ClassVar[int] = 7
    FROM_SERVER: ClassVar[bool] = True
    recipient: int
    survivors: tuple[int, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_ascending(self, "survivors", self.survivors)


class SurvivorSignature(NamedTuple):
    """One client's signature over the survivor set U3 (ConsistencyCheck)."""

    peer: int
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest(Message):
    """Round 3: which neighbours' masked inputs arrived (survivors) and which did not (dropped);
    in authenticated rounds also at least t clients' signatures over the survivor set."""

    TYPE: ClassVar[int] = 9
    FROM_SERVER: ClassVar[bool] = True
    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    consistency: tuple[SurvivorSignature, ...] = ()

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_ascending(self, "survivors", self.survivors)
        _check_ascending(self, "dropped", self.dropped)
        _check_ascending(self, "consistency", tuple(map(_PEER, self.consistency)))
        _check_all_bytes(self, "survivor signature", self.consistency, SIGNATURE_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort(Message):
    """The round ended without a result for the recipient; ``reason`` says why."""

    TYPE: ClassVar[int] = 15
    FROM_SERVER: ClassVar[bool] = True
    recipient: int
    reason: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if not isinstance(self.reason, str) or len(self.reason) > MAX_REASON_CHARS:
            raise _fail(self, f"reason must be text of at most {MAX_REASON_CHARS} characters")


# --- client -> server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys(Message):
    """The sender's two public keys; in authenticated rounds signed with its identity key."""

    TYPE: ClassVar[int] = 2
    encryption_key: bytes
    mask_key: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_bytes(self, "encryption_key", self.encryption_key, KEY_BYTES)
        _check_bytes(self, "mask_key", self.mask_key, KEY_BYTES)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_BYTES):
            raise _fail(self, f"signature must be {SIGNATURE_BYTES} bytes or absent")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys(Message):
    """The sender's shares for each live neighbour, and a commitment to its self-mask seed."""

    TYPE: ClassVar[int] = 4
    self_mask_commitment: bytes
    encrypted_shares: tuple[EncryptedShares, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_bytes(self, "self_mask_commitment", self.self_mask_commitment, COMMITMENT_BYTES)
        _check_ciphertexts(self, self.encrypted_shares)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInput(Message):
    """y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^bits, as a read-only ring vector.

    ``complaints``: neighbours whose share ciphertext did not open; the server blames them.
    """

    TYPE: ClassVar[int] = 6
    complaints: tuple[int, ...] = ()
    bits: int
    masked: np.ndarray = field(compare=False)

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_ascending(self, "complaints", self.complaints)
        if not _is_uint(self.bits, MAX_BITS) or self.bits < 1:
            raise _fail(self, f"bits must lie in [1, {MAX_BITS}], got {self.bits!r}")
        v = self.masked
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype != ring_dtype(self.bits):
            raise _fail(self, f"masked must be a 1-D {np.dtype(ring_dtype(self.bits))} array")
        if self.bits not in (32, 64) and v.size and int(v.max()) >> self.bits:
            raise _fail(self, f"masked holds values outside Z_2^{self.bits}")
        if v.flags.writeable:
            v = v.copy()
            v.flags.writeable = False
            object.__setattr__(self, "masked", v)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyCheck(Message):
    """The sender's signature over (session, round, the survivor set it was sent)."""

    TYPE: ClassVar[int] = 8
    signature: bytes

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check_bytes(self, "signature", self.signature, SIGNATURE_BYTES)


class RevealedShare(NamedTuple):
    peer: int
    share: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskResponse(Message):
    """Shares of survivors' self-mask seeds and of dropped clients' mask private keys."""

    TYPE: ClassVar[int] = 10
    self_mask_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        for name, items in (("self_mask_shares", self.self_mask_shares), ("key_shares", self.key_shares)):
            _check_ascending(self, name, tuple(map(_PEER, items)))
            _check_all_bytes(self, f"{name} share", items, SHARE_BYTES)
        overlap = set(map(_PEER, self.self_mask_shares)).intersection(map(_PEER, self.key_shares))
        if overlap:
            raise _fail(self, f"reveals both secrets of peers {sorted(overlap)}")


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        AdvertiseKeysRequest,
        AdvertiseKeys,
        ShareKeysRequest,
        ShareKeys,
        MaskedInputRequest,
        MaskedInput,
        ConsistencyCheckRequest,
        ConsistencyCheck,
        UnmaskRequest,
        UnmaskResponse,
        Abort,
    )
}
