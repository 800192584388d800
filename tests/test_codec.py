"""The wire codec: vectors, round trips, and the malformed-message suite."""

import cbor2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.codec import Limits, decode, encode, encode_forwarded_shares, encode_neighbour_keys, pack_bits, unpack_bits
from secagg.errors import MalformedMessage
from secagg.messages import (
    AdvertiseKeys,
    SHARE_CIPHERTEXT_BYTES,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    NeighbourKeys,
    RevealedShare,
    ShareKeys,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskResponse,
)

from conftest import load_vectors

CODEC = load_vectors("codec.json")["vectors"]
FRAMES = {v["type"]: bytes.fromhex(v["frame"]) for v in CODEC}
HEAD = dict(session_id=bytes(range(16)), round=3)


@pytest.mark.parametrize("vector", CODEC, ids=lambda v: v["type"])
def test_vectors_decode_and_reencode_byte_for_byte(vector):
    frame = bytes.fromhex(vector["frame"])
    msg = decode(frame)
    assert msg.name == vector["type"]
    assert encode(msg) == frame


def test_forwarded_shares_are_the_masked_input_request_byte_for_byte():
    def columns_of(msg):
        return dict(session_id=msg.session_id, round=msg.round, recipient=msg.recipient,
                    senders=[e.peer for e in msg.encrypted_shares],
                    ciphertexts=[e.ciphertext for e in msg.encrypted_shares])

    vector = FRAMES["MaskedInputRequest"]
    assert encode_forwarded_shares(**columns_of(decode(vector))) == vector
    msg = MaskedInputRequest(**HEAD, sender=0, recipient=5, encrypted_shares=tuple(
        EncryptedShares(peer, bytes([peer]) * SHARE_CIPHERTEXT_BYTES) for peer in (2, 7, 9)))
    columns = columns_of(msg)
    assert encode_forwarded_shares(**columns) == encode(msg)
    for bad in (dict(senders=columns["senders"][::-1]), dict(ciphertexts=columns["ciphertexts"][1:]),
                dict(ciphertexts=[c[:-1] for c in columns["ciphertexts"]])):
        with pytest.raises(ValueError):
            encode_forwarded_shares(**{**columns, **bad})


@pytest.mark.parametrize("signed", [False, True])
def test_neighbour_keys_are_the_share_keys_request_byte_for_byte(signed):
    keys = tuple(NeighbourKeys(client=c, encryption_key=bytes([c]) * 32, mask_key=bytes([c + 1]) * 32,
                               signature=bytes([c + 2]) * 64 if signed else b"") for c in (3, 4, 8))
    msg = ShareKeysRequest(**HEAD, sender=0, recipient=5, neighbour_keys=keys)
    columns = dict(session_id=msg.session_id, round=msg.round, recipient=5, clients=[k.client for k in keys],
                   keys=[k.encryption_key + k.mask_key for k in keys], signatures=[k.signature for k in keys])
    assert encode_neighbour_keys(**columns) == encode(msg)
    assert decode(encode(msg)) == msg
    with pytest.raises(ValueError):
        encode_neighbour_keys(**{**columns, "keys": columns["keys"][:2]})


def test_bitpack_vectors():
    for v in load_vectors("bitpack.json")["vectors"]:
        arr = np.array(v["values"], dtype=np.uint32 if v["bits"] <= 32 else np.uint64)
        assert pack_bits(arr, v["bits"]).hex() == v["packed"]
        assert unpack_bits(bytes.fromhex(v["packed"]), v["bits"], len(arr)).tolist() == v["values"]


@given(bits=st.integers(1, 62), length=st.integers(0, 300), data=st.data())
def test_bitpack_round_trip(bits, length, data):
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=length, max_size=length))
    arr = np.array(values, dtype=np.uint32 if bits <= 32 else np.uint64)
    packed = pack_bits(arr, bits)
    assert len(packed) == -(-length * bits // 8)
    assert unpack_bits(packed, bits, length).tolist() == values


def test_bitpack_round_trip_across_chunk_boundaries():
    gen = np.random.default_rng(1)
    for bits in (3, 17, 45):
        arr = gen.integers(0, 2**bits, 200_003, dtype=np.uint64).astype(np.uint32 if bits <= 32 else np.uint64)
        assert np.array_equal(unpack_bits(pack_bits(arr, bits), bits, arr.size), arr)


def test_masked_input_costs_packed_size_plus_small_header():
    for bits, d in ((13, 1000), (32, 100_000), (20, 12345)):
        v = np.zeros(d, dtype=np.uint32)
        frame = encode(MaskedInput(**HEAD, sender=2, bits=bits, masked=v))
        assert -(-d * bits // 8) < len(frame) <= -(-d * bits // 8) + 40


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_every_truncation_is_refused(kind):
    frame = FRAMES[kind]
    for cut in range(len(frame)):
        with pytest.raises(MalformedMessage):
            decode(frame[:cut])


def test_trailing_bytes_are_refused():
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(FRAMES["AdvertiseKeys"] + b"\x00")


def test_oversized_frame_is_refused_before_parsing():
    with pytest.raises(MalformedMessage, match="exceeds the limit"):
        decode(FRAMES["MaskedInput"], Limits(max_frame_bytes=10))


def test_vector_longer_than_the_limit_is_refused():
    with pytest.raises(MalformedMessage, match="at most 3 coordinates"):
        decode(FRAMES["MaskedInput"], Limits(max_dim=3))


def test_list_longer_than_the_limit_is_refused():
    with pytest.raises(MalformedMessage, match="at most 1"):
        decode(FRAMES["UnmaskRequest"], Limits(max_list=1))


def _reframe(kind, mutate):
    frame = cbor2.loads(FRAMES[kind])
    mutate(frame)
    return cbor2.dumps(frame, canonical=True)


@pytest.mark.parametrize(
    "kind, mutate, message",
    [
        ("AdvertiseKeys", lambda f: f.__setitem__(0, 2), "version"),
        ("AdvertiseKeys", lambda f: f.__setitem__(1, 99), "unknown message type"),
        ("AdvertiseKeys", lambda f: f.__setitem__(1, 11), "unknown message type"),
        ("AdvertiseKeys", lambda f: f.__setitem__(2, b"short"), "session_id"),
        ("AdvertiseKeys", lambda f: f.__setitem__(3, -1), "round"),
        ("AdvertiseKeys", lambda f: f.__setitem__(4, 0), "direction"),
        ("AdvertiseKeys", lambda f: f.__setitem__(5, b"x" * 31), "32 bytes"),
        ("AdvertiseKeys", lambda f: f.append(b"extra"), "3 fields"),
        ("AdvertiseKeys", lambda f: f.__setitem__(7, b"x" * 63), "signature must be 64 bytes"),
        ("ShareKeysRequest", lambda f: f.__setitem__(8, f[8][:-1]), "64 each"),
        ("AdvertiseKeysRequest", lambda f: f[6].__setitem__(8, 2), "authenticated flag"),
        ("AdvertiseKeys", lambda f: f.__setitem__(5, "text"), "byte string"),
        ("ShareKeys", lambda f: f.__setitem__(7, f[7][:-1]), "88 each"),
        ("ShareKeys", lambda f: (f[6].append(f[6][0]), f.__setitem__(7, f[7] * 2)), "ascending"),
        ("ShareKeys", lambda f: f.__setitem__(6, [1, "2"]), "peer ids"),
        ("ShareKeys", lambda f: f.__setitem__(5, bytes(31)), "32 bytes"),
        ("MaskedInput", lambda f: f.__setitem__(5, [3, 3]), "ascending"),
        ("MaskedInput", lambda f: f.__setitem__(5, b"x"), "complaint ids"),
        ("ShareKeysRequest", lambda f: f.__setitem__(7, f[7] + b"x"), "64 each"),
        ("MaskedInputRequest", lambda f: f.__setitem__(7, [f[7]]), "one byte string"),
        ("UnmaskRequest", lambda f: f.__setitem__(6, [3, 1]), "ascending"),
        ("UnmaskRequest", lambda f: f.__setitem__(6, [0]), "invalid client id"),
        ("UnmaskRequest", lambda f: f.__setitem__(5, 0), "recipient"),
        ("UnmaskResponse", lambda f: (f[7].insert(0, 1), f.__setitem__(8, f[6][:36] + f[8])), "both secrets"),
        ("UnmaskResponse", lambda f: f.__setitem__(8, f[8] + bytes(35)), "36 each"),
        ("MaskedInput", lambda f: f[6].__setitem__(0, 63), "bit width"),
        ("MaskedInput", lambda f: f[6].__setitem__(1, 5), "needs"),
        ("MaskedInput", lambda f: f[6].__setitem__(2, f[6][2][:-1] + b"\xff"), "padding"),
        ("AdvertiseKeysRequest", lambda f: f[6].__setitem__(2, 70), "unusable"),
        ("AdvertiseKeysRequest", lambda f: f[6].__setitem__(4, 1), "unusable"),
        ("AdvertiseKeysRequest", lambda f: f[6].__setitem__(7, 2**40), "unusable"),
        ("AdvertiseKeysRequest", lambda f: f[6].__setitem__(6, 1), "float"),
        ("Abort", lambda f: f.__setitem__(6, b"bytes"), "text"),
    ],
)
def test_wrong_fields_are_refused(kind, mutate, message):
    with pytest.raises(MalformedMessage, match=message):
        decode(_reframe(kind, mutate))


def test_non_canonical_encodings_are_refused():
    frame = cbor2.loads(FRAMES["AdvertiseKeys"])
    # The same array with the round number padded to a 64-bit integer.
    body = b"".join(cbor2.dumps(x, canonical=True) for x in frame[:3])
    padded = body + b"\x1b" + frame[3].to_bytes(8, "big") + b"".join(cbor2.dumps(x) for x in frame[4:])
    data = bytes([0x80 + len(frame)]) + padded
    with pytest.raises(MalformedMessage, match="canonical"):
        decode(data)


def test_tags_and_maps_are_refused():
    with pytest.raises(MalformedMessage):
        decode(cbor2.dumps(cbor2.CBORTag(1, 0)))
    with pytest.raises(MalformedMessage):
        decode(cbor2.dumps({"type": 2}))
    with pytest.raises(MalformedMessage):
        decode(cbor2.dumps([1, 2, cbor2.CBORTag(2, b"\x01" * 16), 0, 1, b"x" * 32, b"y" * 32]))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    try:
        decode(data)
    except MalformedMessage:
        pass


def test_not_bytes_is_refused():
    with pytest.raises(MalformedMessage):
        decode("a string")


def test_messages_validate_on_construction():
    with pytest.raises(MalformedMessage, match="strictly ascending"):
        ShareKeys(**HEAD, sender=1, self_mask_commitment=bytes(32), encrypted_shares=(
            EncryptedShares(peer=3, ciphertext=bytes(88)), EncryptedShares(peer=2, ciphertext=bytes(88))))
    with pytest.raises(MalformedMessage, match="outside Z_2"):
        MaskedInput(**HEAD, sender=1, bits=4, masked=np.array([16], dtype=np.uint32))
    with pytest.raises(MalformedMessage, match="uint32"):
        MaskedInput(**HEAD, sender=1, bits=4, masked=np.array([1], dtype=np.int64))
    with pytest.raises(MalformedMessage, match="both secrets"):
        UnmaskResponse(**HEAD, sender=1, self_mask_shares=(RevealedShare(peer=2, share=bytes(36)),),
                       key_shares=(RevealedShare(peer=2, share=bytes(36)),))
    with pytest.raises(MalformedMessage, match="direction"):
        AdvertiseKeys(**HEAD, sender=0, encryption_key=bytes(32), mask_key=bytes(32))
    with pytest.raises(MalformedMessage, match="recipient"):
        UnmaskRequest(**HEAD, sender=0, recipient=0, survivors=(), dropped=())


def test_masked_vector_is_read_only():
    v = np.arange(4, dtype=np.uint32)
    msg = MaskedInput(**HEAD, sender=1, bits=32, masked=v)
    v[0] = 99
    assert msg.masked[0] == 0
    with pytest.raises(ValueError):
        msg.masked[0] = 5


def test_client_refuses_a_malformed_frame_and_stops():
    from secagg.protocol.client import Client
    from secagg.protocol.rounds import ClientState

    client = Client(2)
    with pytest.raises(MalformedMessage, match="client 2 received a malformed frame"):
        client.receive(FRAMES["AdvertiseKeysRequest"][:-3])
    assert client.state is ClientState.ERROR and isinstance(client.error, MalformedMessage)


def test_server_excludes_a_client_that_sends_garbage_and_never_raises():
    from secagg.config import RoundConfig
    from secagg.protocol.rounds import PeerState
    from secagg.protocol.server import Server

    server = Server(RoundConfig.create(10, 4, dropout_rate=0.1))
    server.start()
    server.receive(b"\x85\x01", 4)
    assert server.peers[4] is PeerState.EXCLUDED
    assert "client 4, round 0 (AdvertiseKeys): malformed frame" in str(server.excluded[4])
    frame = encode(AdvertiseKeys(session_id=server.config.session_id, round=0, sender=5,
                                 encryption_key=bytes(32), mask_key=bytes(32)))
    server.receive(frame, 6)
    assert "client 6, round 0 (AdvertiseKeys): frame claims to be from client 5" in str(server.excluded[6])


# The server knows the packed size of the vector it expects (Limits.for_config): it then parses a
# masked input without copying or comparing the vector's bytes. Every frame is judged the same.
SERVER_SIDE = [Limits(), Limits(vector_bytes=4 * 5000)]


@pytest.mark.parametrize("limits", SERVER_SIDE, ids=["whole", "vector-view"])
def test_large_payload_frames_are_checked_for_canonical_form_too(limits):
    big = MaskedInput(**HEAD, sender=2, bits=32, masked=np.arange(5000, dtype=np.uint32))
    frame = encode(big)
    got = decode(frame, limits)
    assert np.array_equal(got.masked, big.masked) and not got.masked.flags.writeable
    assert got == big and encode(got) == frame
    for bad, reason in ((frame + b"\x00", "trailing"), (frame[:-1], "needs|truncated"),
                        (frame[:-4], "needs|truncated")):
        with pytest.raises(MalformedMessage, match=reason):
            decode(bad, limits)
    # The vector's head in place, but the prefix cut short: it is not a frame ending in a vector.
    with pytest.raises(MalformedMessage):
        decode(frame[:10] + frame[-(4 * 5000 + 3):], limits)
    obj = cbor2.loads(frame)
    # The same frame with the payload's length in a non-minimal 8-byte head.
    payload = obj[6][2]
    prefix = cbor2.dumps([*obj[:6], [obj[6][0], obj[6][1], b""]], canonical=True)[:-1]
    padded = prefix + b"\x5b" + len(payload).to_bytes(8, "big") + payload
    # Fix the outer array heads: they are unchanged, so only the payload head differs.
    with pytest.raises(MalformedMessage, match="canonical"):
        decode(padded, limits)
    # A non-minimal integer before the payload.
    body = cbor2.dumps(obj[:3], canonical=True)[1:]
    wrong = bytes([0x80 + len(obj)]) + body + b"\x1b" + obj[3].to_bytes(8, "big") + cbor2.dumps(obj[4:], canonical=True)[1:]
    with pytest.raises(MalformedMessage, match="canonical"):
        decode(wrong, limits)
