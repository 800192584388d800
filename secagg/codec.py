"""The wire codec: messages <-> canonical CBOR (RFC 8949), ring vectors bit-packed at b bits.

Theory of operation. A frame is one CBOR array:

    [version, type, session_id, round, sender, field...]

with the fields of each message type in the order ``_encode_fields`` gives (SPEC.md, sections
6 and 7). Per-peer records travel as two columns, the ascending peer ids and one byte string of
fixed-size records. Integers, byte strings, text, arrays and (in the config only) three floats are used; no
maps, no tags. Ring vectors travel as ``[bits, length, packed]`` where ``packed`` holds the
coordinates little-endian, b bits each, LSB first, ceil(length * b / 8) bytes, with zero padding.

Decoding is defensive: the frame length is checked against a hard limit before parsing, the parse
must consume every byte, and the bytes must be exactly the canonical encoding of what they decode
to (so every message has one encoding, and tags, indefinite lengths or padded integers are
refused). Then every field is type-checked against the schema and the message validates itself.
Anything wrong raises ``MalformedMessage``. Nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import io
from itertools import chain, repeat
from operator import attrgetter
from dataclasses import dataclass

import cbor2
import numpy as np

from secagg.config import MAX_CLIENTS, MAX_DIM, PROTOCOL_VERSION, RoundConfig
from secagg.errors import ConfigurationError, MalformedMessage
from secagg.params import AdversaryClass
from secagg.crypto.kex import KEY_BYTES
from secagg.crypto.sign import SIGNATURE_BYTES
from secagg.crypto.shamir import SHARE_BYTES
from secagg.messages import (
    MESSAGE_TYPES,
    SERVER_ID,
    SHARE_CIPHERTEXT_BYTES,
    Abort,
    AdvertiseKeys,
    AdvertiseKeysRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    Message,
    NeighbourKeys,
    RevealedShare,
    ShareKeys,
    ShareKeysRequest,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
    ConsistencyCheck,
    ConsistencyCheckRequest,
)
from secagg.quantize import ring_dtype

HEADER_FIELDS = 5
_INT_ONLY = {int}
_PACK_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard bounds applied before and during decoding."""

    max_frame_bytes: int = 1 << 30
    max_dim: int = MAX_DIM
    max_list: int = MAX_CLIENTS
    vector_bytes: int = 0  # the packed size of the ring vector expected, if known (decode_frame)

    @classmethod
    def for_config(cls, config: RoundConfig) -> Limits:
        """The server's limits for one round: every list in every message is per neighbour, so at
        most ``degree`` long, and the largest frame is a masked input."""
        packed = -(-config.dim * config.bits // 8)
        return cls(
            max_frame_bytes=packed + 1024 + 128 * config.degree,
            max_dim=config.dim,
            max_list=config.degree,
            vector_bytes=packed,
        )

    @classmethod
    def for_client(cls, config: RoundConfig) -> Limits:
        """A client's limits once it accepted a round: it never receives a vector, and its largest
        frame is a per-neighbour list (or an Abort's reason)."""
        # An authenticated round also sends it the survivor set U3, up to n ids.
        n = config.num_clients if config.authenticated else 0
        return cls(max_frame_bytes=PRE_CONFIG_FRAME_BYTES + 128 * config.degree + 5 * n, max_dim=0,
                   max_list=max(config.degree, n))


DEFAULT_LIMITS = Limits()
# What a client accepts before it has a round: an AdvertiseKeysRequest or an Abort (whose reason
# is at most 4,096 characters, 16 KiB in UTF-8).
PRE_CONFIG_FRAME_BYTES = 20 * 1024
PRE_CONFIG_LIMITS = Limits(max_frame_bytes=PRE_CONFIG_FRAME_BYTES, max_dim=MAX_DIM, max_list=0)


# --- bit packing ------------------------------------------------------------------------------


def packed_size(length: int, bits: int) -> int:
    return -(-length * bits // 8)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Coordinates in [0, 2^bits) -> little-endian, LSB-first bit string, zero padded."""
    if bits in (8, 16, 32, 64):
        return values.astype(f"<u{bits // 8}", copy=False).tobytes()
    out = []
    # Chunks of a multiple of 8 coordinates end on a byte boundary, so they concatenate.
    for start in range(0, values.size, _PACK_CHUNK):
        chunk = values[start : start + _PACK_CHUNK].astype("<u8")
        bitplanes = np.unpackbits(chunk.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        out.append(np.packbits(bitplanes[:, :bits].ravel(), bitorder="little").tobytes())
    return b"".join(out)


def unpack_bits(data: bytes, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`. Refuses a wrong size or non-zero padding."""
    if len(data) != packed_size(length, bits):
        raise MalformedMessage(
            f"ring vector of {length} coordinates at {bits} bits needs "
            f"{packed_size(length, bits)} bytes, got {len(data)}"
        )
    dtype = ring_dtype(bits)
    if bits in (8, 16, 32, 64):
        words = np.frombuffer(data, dtype=f"<u{bits // 8}")  # a read-only view: no copy
        return words if words.dtype == np.dtype(dtype) else words.astype(dtype)
    raw = np.frombuffer(data, dtype=np.uint8)
    if (length * bits) % 8 and raw[-1] >> ((length * bits) % 8):
        raise MalformedMessage("ring vector has non-zero padding bits")
    out = np.empty(length, dtype=dtype)
    for start in range(0, length, _PACK_CHUNK):
        count = min(_PACK_CHUNK, length - start)
        first = start * bits // 8
        chunk = raw[first : first + packed_size(count, bits)]
        bitplanes = np.unpackbits(chunk, bitorder="little")[: count * bits].reshape(count, bits)
        widened = np.zeros((count, 64), dtype=np.uint8)
        widened[:, :bits] = bitplanes
        out[start : start + count] = np.packbits(widened, axis=1, bitorder="little").view("<u8").ravel()
    return out


# --- field kinds ------------------------------------------------------------------------------
# Each kind is (to_wire, from_wire). from_wire type-checks and raises MalformedMessage.


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(f"malformed frame: expected {what}")


def _uint(v, what="an unsigned integer"):
    _expect(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64, what)
    return v


def _bytes(v, what="a byte string"):
    _expect(isinstance(v, bytes), what)
    return v


def _list(v, limits: Limits, what: str):
    _expect(isinstance(v, list), f"a list of {what}")
    _expect(len(v) <= limits.max_list, f"at most {limits.max_list} {what}, got {len(v)}")
    return v


_ADVERSARIES = list(AdversaryClass)  # on the wire by index: 0 semi-honest, 1 semi-malicious, 2 malicious


def config_to_wire(c: RoundConfig) -> list:
    """The config's 12 fields as they travel (SPEC section 6.1); the operator signs their CBOR."""
    return [c.num_clients, c.dim, c.bits, c.degree, c.threshold, c.graph_seed, c.value_range, c.levels,
            int(c.authenticated), _ADVERSARIES.index(c.adversary), c.adversarial_rate, c.dropout_rate]


def canonical_cbor(value) -> bytes:
    return cbor2.dumps(value, canonical=True)


SIGNED_CONFIG_VERSION = 1


def encode_signed_config(config: RoundConfig, signature: bytes) -> bytes:
    """A round config and the operator's signature over it, as the operator hands them to the
    aggregation server: CBOR [1, session_id, round, config fields, signature] (SPEC 5.5)."""
    return canonical_cbor([SIGNED_CONFIG_VERSION, config.session_id, config.round,
                           config_to_wire(config), signature])


def decode_signed_config(data: bytes) -> tuple[RoundConfig, bytes]:
    """Inverse of :func:`encode_signed_config`; ``MalformedMessage`` if it is not one. The
    signature is not checked here (the clients check it)."""
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a malformed file
        raise MalformedMessage(f"not a signed round config: {exc}") from None
    _expect(isinstance(value, list) and len(value) == 5 and value[0] == SIGNED_CONFIG_VERSION,
            f"a signed round config [{SIGNED_CONFIG_VERSION}, session, round, config, signature]")
    _, session_id, rnd, fields, signature = value
    _bytes(session_id, "a session id")
    _uint(rnd, "a round")
    _bytes(signature, "a signature")
    _expect(canonical_cbor(value) == data, "the canonical encoding")
    return _config_from_wire(fields, (session_id, rnd), DEFAULT_LIMITS), signature


def _config_from_wire(v, header, limits: Limits) -> RoundConfig:
    _expect(isinstance(v, list) and len(v) == 12, "a config of 12 fields")
    n, dim, bits, degree, threshold, seed, value_range, levels, authenticated, adversary, gamma, delta = v
    _expect(authenticated in (0, 1) and type(authenticated) is int, "an authenticated flag of 0 or 1")
    for x in (n, dim, bits, degree, threshold, levels):
        _uint(x, "integer config fields")
    _bytes(seed, "a graph seed")
    _expect(type(adversary) is int and 0 <= adversary < len(_ADVERSARIES),
            f"an adversary class index in [0, {len(_ADVERSARIES) - 1}]")
    for x, what in ((value_range, "value range"), (gamma, "adversarial rate"), (delta, "dropout rate")):
        _expect(isinstance(x, float), f"a float {what}")
    _expect(dim <= limits.max_dim, f"dim at most {limits.max_dim}, got {dim}")
    try:
        return RoundConfig(
            session_id=header[0], round=header[1], num_clients=n, dim=dim, bits=bits,
            degree=degree, threshold=threshold, graph_seed=seed, value_range=value_range,
            levels=levels, authenticated=bool(authenticated), adversary=_ADVERSARIES[adversary],
            adversarial_rate=gamma, dropout_rate=delta,
        )
    except ConfigurationError as exc:
        raise MalformedMessage(f"the announced configuration is unusable: {exc}") from None


def _vector_to_wire(bits: int, v: np.ndarray) -> list:
    return [bits, int(v.size), pack_bits(v, bits)]


def _vector_from_wire(v, limits: Limits):
    _expect(isinstance(v, list) and len(v) == 3, "a ring vector [bits, length, packed]")
    packed = v[2] if type(v[2]) is memoryview else _bytes(v[2])  # a view only from _vector_frame
    bits, length = _uint(v[0]), _uint(v[1])
    _expect(1 <= bits <= 62, "a bit width in [1, 62]")
    _expect(length <= limits.max_dim, f"a vector of at most {limits.max_dim} coordinates")
    return bits, unpack_bits(packed, bits, length)


def split_records(blob: bytes, size: int) -> list[bytes]:
    """A column of fixed-size records -> the records (slicing in C: a round splits n * k)."""
    return list(map(blob.__getitem__, map(slice, range(0, len(blob), size), range(size, len(blob) + size, size))))


def make_records(kind, peers, payloads) -> tuple:
    """Per-peer NamedTuples ``kind(peer, payload)`` built in C (``tuple.__new__`` on the pair is
    what ``kind``'s own two-field constructor does, without a Python call per record)."""
    return tuple(map(tuple.__new__, repeat(kind), zip(peers, payloads)))


def _columns(items, attr: str) -> tuple[list[int], bytes]:
    """Per-peer records as two columns: the peer ids, and the records concatenated."""
    return list(map(attrgetter("peer"), items)), b"".join(map(attrgetter(attr), items))


# The server sends some fields alike to every client of a round: the survivor set U3 in each
# ConsistencyCheckRequest, the t survivor-set signatures in each UnmaskRequest. They are encoded
# once per round, not once per recipient; the frame's bytes are the same either way.


class _Encoded:
    """A value already in canonical CBOR, written into a frame as it is."""

    __slots__ = ("cbor",)

    def __init__(self, cbor: bytes) -> None:
        self.cbor = cbor


def _write_encoded(encoder, value: _Encoded) -> None:
    encoder.write(value.cbor)


@functools.lru_cache(maxsize=4)
def _shared_ids(ids: tuple[int, ...]) -> _Encoded:
    return _Encoded(cbor2.dumps(list(ids), canonical=True))


@functools.lru_cache(maxsize=4)
def _shared_signatures(consistency: tuple[SurvivorSignature, ...]) -> tuple[_Encoded, bytes]:
    peers, blob = _columns(consistency, "signature")
    return _Encoded(cbor2.dumps(peers, canonical=True)), blob


def _encode_fields(msg: Message) -> list:
    match msg:
        case AdvertiseKeysRequest():
            return [msg.recipient, config_to_wire(msg.config), msg.config_signature]
        case AdvertiseKeys():
            return [msg.encryption_key, msg.mask_key, msg.signature]
        case ShareKeysRequest():
            keys = msg.neighbour_keys
            return [msg.recipient, list(map(attrgetter("client"), keys)),
                    b"".join(chain.from_iterable(map(attrgetter("encryption_key", "mask_key"), keys))),
                    b"".join(map(attrgetter("signature"), keys))]
        case ShareKeys():
            return [msg.self_mask_commitment, *_columns(msg.encrypted_shares, "ciphertext")]
        case MaskedInputRequest():
            return [msg.recipient, *_columns(msg.encrypted_shares, "ciphertext")]
        case MaskedInput():
            return [list(msg.complaints), _vector_to_wire(msg.bits, msg.masked)]  # vector last
        case UnmaskRequest():
            return [msg.recipient, list(msg.survivors), list(msg.dropped), *_shared_signatures(msg.consistency)]
        case ConsistencyCheckRequest():
            return [msg.recipient, _shared_ids(msg.survivors)]
        case ConsistencyCheck():
            return [msg.signature]
        case UnmaskResponse():
            return [*_columns(msg.self_mask_shares, "share"), *_columns(msg.key_shares, "share")]
        case Abort():
            return [msg.recipient, msg.reason]
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


def _decode_fields(cls: type[Message], fields: list, header: tuple, limits: Limits) -> dict:
    def arity(n):
        _expect(len(fields) == n, f"{n} fields for {cls.__name__}, got {len(fields)}")

    def ids(v, what):
        items = _list(v, limits, what)
        if items and set(map(type, items)) != _INT_ONLY:  # ranges are checked by the message
            for x in items:
                _uint(x, what)
        return tuple(items)

    def records(ids_field, blob, what: str, size: int) -> tuple[tuple[int, ...], list[bytes]]:
        peers = ids(ids_field, f"{what} peer ids")
        _bytes(blob, f"{what} as one byte string")
        if len(blob) != size * len(peers):
            raise MalformedMessage(
                f"malformed frame: {len(peers)} {what} need {size * len(peers)} bytes "
                f"({size} each), got {len(blob)}"
            )
        return peers, split_records(blob, size)

    def ciphertexts(ids_field, blob):
        return make_records(EncryptedShares, *records(ids_field, blob, "ciphertexts", SHARE_CIPHERTEXT_BYTES))

    def shares(ids_field, blob):
        return make_records(RevealedShare, *records(ids_field, blob, "shares", SHARE_BYTES))

    if cls is AdvertiseKeysRequest:
        arity(3)
        return {"recipient": _uint(fields[0]), "config": _config_from_wire(fields[1], header, limits),
                "config_signature": _bytes(fields[2], "a config signature")}
    if cls is AdvertiseKeys:
        arity(3)
        return {"encryption_key": _bytes(fields[0]), "mask_key": _bytes(fields[1]),
                "signature": _bytes(fields[2], "a signature")}
    if cls is ShareKeysRequest:
        arity(4)
        clients, blobs = records(fields[1], fields[2], "neighbour keys", 2 * KEY_BYTES)
        signatures = [b""] * len(clients)
        if _bytes(fields[3], "the signatures as one byte string"):
            _, signatures = records(fields[1], fields[3], "signatures", SIGNATURE_BYTES)
        keys = tuple(
            NeighbourKeys(client=c, encryption_key=b[:KEY_BYTES], mask_key=b[KEY_BYTES:], signature=sig)
            for c, b, sig in zip(clients, blobs, signatures)
        )
        return {"recipient": _uint(fields[0]), "neighbour_keys": keys}
    if cls is ShareKeys:
        arity(3)
        return {"self_mask_commitment": _bytes(fields[0], "a commitment"),
                "encrypted_shares": ciphertexts(fields[1], fields[2])}
    if cls is MaskedInputRequest:
        arity(3)
        return {"recipient": _uint(fields[0]), "encrypted_shares": ciphertexts(fields[1], fields[2])}
    if cls is MaskedInput:
        arity(2)
        complaints = ids(fields[0], "complaint ids")
        bits, vector = _vector_from_wire(fields[1], limits)
        return {"complaints": complaints, "bits": bits, "masked": vector}
    if cls is UnmaskRequest:
        arity(5)
        signers, signatures = records(fields[3], fields[4], "survivor signatures", SIGNATURE_BYTES)
        return {
            "recipient": _uint(fields[0]),
            "survivors": ids(fields[1], "survivor ids"),
            "dropped": ids(fields[2], "dropped ids"),
            "consistency": tuple(map(SurvivorSignature, signers, signatures)),
        }
    if cls is ConsistencyCheckRequest:
        arity(2)
        return {"recipient": _uint(fields[0]), "survivors": ids(fields[1], "survivor ids")}
    if cls is ConsistencyCheck:
        arity(1)
        return {"signature": _bytes(fields[0], "a signature")}
    if cls is UnmaskResponse:
        arity(4)
        return {"self_mask_shares": shares(fields[0], fields[1]), "key_shares": shares(fields[2], fields[3])}
    if cls is Abort:
        arity(2)
        _expect(isinstance(fields[1], str), "a text reason")
        return {"recipient": _uint(fields[0]), "reason": fields[1]}
    raise MalformedMessage(f"no decoder for {cls.__name__}")


# --- frames -----------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    frame = [PROTOCOL_VERSION, msg.TYPE, msg.session_id, msg.round, msg.sender, *_encode_fields(msg)]
    return cbor2.dumps(frame, canonical=True, default=_write_encoded)


# The server's two fan-out requests, straight from columns: the frame ``encode`` gives for the
# message, byte for byte, without a record object per peer (a round sends n of each, k records in
# every one). Every record was checked when it reached the server; ``peers`` must be ascending,
# with one fixed-size record each, in that order.


def _fan_out_frame(cls: type[Message], session_id: bytes, round: int, recipient: int, peers: list[int],
                   columns: list[tuple[list[bytes], int]], empty: int = 0) -> bytes:
    if any(a >= b for a, b in zip(peers, peers[1:])):
        raise ValueError(f"{cls.__name__}: peers must be ascending")
    blobs = []
    for records, size in columns:
        blob = b"".join(records)
        if len(records) != len(peers) or len(blob) != size * len(peers):
            raise ValueError(f"{cls.__name__}: one {size}-byte record per peer")
        blobs.append(blob)
    return cbor2.dumps([PROTOCOL_VERSION, cls.TYPE, session_id, round, SERVER_ID, recipient, peers, *blobs,
                        *[b""] * empty], canonical=True)


def encode_forwarded_shares(*, session_id: bytes, round: int, recipient: int, senders: list[int],
                            ciphertexts: list[bytes]) -> bytes:
    """``encode(MaskedInputRequest(...))``: the ciphertexts the server forwards and cannot read."""
    return _fan_out_frame(MaskedInputRequest, session_id, round, recipient, senders,
                          [(ciphertexts, SHARE_CIPHERTEXT_BYTES)])


def encode_neighbour_keys(*, session_id: bytes, round: int, recipient: int, clients: list[int],
                          keys: list[bytes], signatures: list[bytes]) -> bytes:
    """``encode(ShareKeysRequest(...))``; ``keys``: each neighbour's encryption key || mask key;
    ``signatures``: each one's, or all empty (unauthenticated rounds)."""
    if any(signatures):
        return _fan_out_frame(ShareKeysRequest, session_id, round, recipient, clients,
                              [(keys, 2 * KEY_BYTES), (signatures, SIGNATURE_BYTES)])
    return _fan_out_frame(ShareKeysRequest, session_id, round, recipient, clients, [(keys, 2 * KEY_BYTES)],
                          empty=1)


def decode_frame(data: bytes, limits: Limits) -> list:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"a frame must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_frame_bytes:
        raise MalformedMessage(
            f"frame of {len(data)} bytes exceeds the limit of {limits.max_frame_bytes} bytes"
        )
    frame = _vector_frame(data, limits.vector_bytes)  # canonical when not None
    checked = frame is not None
    if not checked:
        frame = _parse(data)
    _expect(isinstance(frame, list) and len(frame) >= HEADER_FIELDS, "a frame array with a header")
    if frame[0] != PROTOCOL_VERSION:
        raise MalformedMessage(f"protocol version {frame[0]!r} is not supported (expected {PROTOCOL_VERSION})")
    if not checked and not _is_canonical(frame, data):
        raise MalformedMessage("frame is not in canonical CBOR encoding")
    return frame


def _parse(data: bytes):
    """One CBOR item that must span all of ``data``."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except cbor2.CBORDecodeEOF:
        raise MalformedMessage(f"truncated frame ({len(data)} bytes)") from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedMessage(f"undecodable frame: {exc}") from None
    if stream.tell() != len(data):
        raise MalformedMessage(f"{len(data) - stream.tell()} trailing bytes after the frame")
    return item


def _vector_frame(data: bytes, size: int) -> list | None:
    """A frame ending in a ring vector of ``size`` packed bytes (a masked input), canonical, with
    the packed bytes a read-only view of ``data``; None if ``data`` does not have that shape (the
    caller then decodes it whole, and refuses it with the precise reason if it is malformed).

    The vector's bytes are neither copied (the parser would copy them) nor compared: everything
    before them is parsed with an empty string in their place, as in :func:`_is_canonical`. That
    prefix item spans all of it, is canonical, and holds the empty string as its last element's
    last element, exactly when ``data`` is the canonical frame with the vector there."""
    head = _bytes_header(size) if size > 4096 else b""
    split = len(data) - size - len(head)
    if not head or split <= 0 or data[split:split + len(head)] != head:
        return None
    prefix = data[:split] + b"\x40"
    try:
        frame = _parse(prefix)
    except MalformedMessage:
        return None
    if not (isinstance(frame, list) and frame and isinstance(frame[-1], list) and frame[-1]
            and frame[-1][-1] == b"" and cbor2.dumps(frame, canonical=True) == prefix):
        return None
    frame[-1][-1] = memoryview(data)[split + len(head):]
    return frame


def _bytes_header(length: int) -> bytes:
    """The canonical CBOR head of a byte string (major type 2) of ``length`` bytes."""
    if length < 24:
        return bytes((0x40 + length,))
    for code, width in ((0x58, 1), (0x59, 2), (0x5A, 4), (0x5B, 8)):
        if length < 1 << (8 * width):
            return bytes((code,)) + length.to_bytes(width, "big")
    raise MalformedMessage("byte string too long")


def _is_canonical(frame: list, data: bytes) -> bool:
    """``data`` is exactly the canonical encoding of ``frame``.

    A large trailing byte string (a masked input's packed vector is the frame's last item) is not
    re-encoded: the rest of the frame is encoded with an empty string in its place, and the data
    must be that prefix, the string's canonical head, and the string itself.
    """
    last = frame[-1]
    if isinstance(last, list) and last and isinstance(last[-1], bytes) and len(last[-1]) > 4096:
        payload = last[-1]
        head = cbor2.dumps([*frame[:-1], [*last[:-1], b""]], canonical=True)[:-1]
        head += _bytes_header(len(payload))
        return len(data) == len(head) + len(payload) and data.startswith(head) and data.endswith(payload)
    return cbor2.dumps(frame, canonical=True) == data


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Bytes -> a validated message, or ``MalformedMessage``."""
    frame = decode_frame(data, limits)
    _, type_code, session_id, round_, sender = frame[:HEADER_FIELDS]
    cls = MESSAGE_TYPES.get(type_code) if isinstance(type_code, int) else None
    if cls is None:
        raise MalformedMessage(f"unknown message type {type_code!r}")
    _bytes(session_id, "a session id")
    header = (session_id, _uint(round_, "a round number"), _uint(sender, "a sender id"))
    fields = _decode_fields(cls, frame[HEADER_FIELDS:], header, limits)
    return cls(session_id=header[0], round=header[1], sender=header[2], **fields)
