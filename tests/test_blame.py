"""Layer 4: one bad client hurts no one else. Each fault is blamed on its sender, who is excluded;
the round ends with the exact sum of the others or an abort that names why: never a wrong sum."""

import os
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.codec import decode, encode
from secagg.crypto import kex
from secagg.errors import (
    BadShare,
    Equivocation,
    InconsistentRequest,
    InvalidPublicKey,
    MalformedMessage,
    RoundAborted,
    UnexpectedMessage,
)
from secagg.graph import harary_graph
from secagg.messages import AdvertiseKeysRequest, EncryptedShares, NeighbourKeys, RevealedShare
from secagg.protocol.client import Client, ClientLimits
from secagg.protocol.rounds import ClientState, PeerState, Phase

from harness import Harness, make_config

P = kex.FIELD_PRIME
LOW_ORDER = sorted(kex.LOW_ORDER_U)
BAD_KEYS = {
    **{f"low-order {i}": u.to_bytes(32, "little") for i, u in enumerate(LOW_ORDER)},
    "u = p (non-canonical zero)": P.to_bytes(32, "little"),
    "top bit set": (1 << 255 | 9).to_bytes(32, "little"),
    "u = p + 1 (non-canonical one)": (P + 1).to_bytes(32, "little"),
}


def _assert_exact(h: Harness):
    result = h.server.result()
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))
    return result


def _rewrite(kind: str, who, change):
    """A tamper that rewrites the frames of type ``kind`` sent by clients in ``who``."""
    def tamper(sender, recipient, frame):
        if sender in who and recipient == 0:
            msg = decode(frame)
            if msg.name == kind:
                return [encode(change(msg))]
        return [frame]
    return tamper


# --- keys ---------------------------------------------------------------------------------------


def test_every_low_order_key_gives_the_all_zero_secret_in_cryptography():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    for u in LOW_ORDER:
        with pytest.raises(ValueError):  # cryptography refuses the all-zero shared secret
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(u.to_bytes(32, "little")))


@pytest.mark.parametrize("name", sorted(BAD_KEYS))
def test_key_check_refuses_bad_keys_and_accepts_honest_ones(name):
    assert kex.public_key_fault(BAD_KEYS[name])
    for _ in range(50):
        assert kex.public_key_fault(kex.generate_keypair(os.urandom)[1]) is None


@pytest.mark.parametrize("name", sorted(BAD_KEYS))
@pytest.mark.parametrize("which", ["encryption_key", "mask_key"])
def test_a_bad_advertised_key_excludes_its_sender_and_the_round_stays_exact(name, which):
    config = make_config(12, 6, dropout_rate=0.2, label="bad-key")
    bad = 4
    h = Harness(config, label="bad-key",
                tamper=_rewrite("AdvertiseKeys", {bad}, lambda m: replace(m, **{which: BAD_KEYS[name]})))
    h.run()
    result = _assert_exact(h)
    assert isinstance(h.server.excluded[bad], InvalidPublicKey)
    assert f"client {bad}" in str(h.server.excluded[bad]) and "AdvertiseKeys" in str(h.server.excluded[bad])
    assert bad not in result.contributors and len(result.contributors) == 11
    assert h.clients[bad].state is ClientState.ABORTED  # told why
    assert not h.router.refusals  # no honest client ever saw the key


def test_a_signed_advert_in_an_unauthenticated_round_excludes_its_sender():
    config = make_config(12, 6, dropout_rate=0.2, label="signed-advert")
    bad = 4
    h = Harness(config, label="signed-advert",
                tamper=_rewrite("AdvertiseKeys", {bad}, lambda m: replace(m, signature=bytes(64))))
    h.run()
    result = _assert_exact(h)
    assert isinstance(h.server.excluded[bad], UnexpectedMessage)
    assert f"client {bad}" in str(h.server.excluded[bad]) and "not authenticated" in str(h.server.excluded[bad])
    assert bad not in result.contributors and len(result.contributors) == 11


def test_colluding_clients_with_low_order_keys_are_all_excluded():
    config = make_config(30, 6, dropout_rate=0.2, label="colluders")
    bad = {3, 7, 8, 21}
    h = Harness(config, label="colluders",
                tamper=_rewrite("AdvertiseKeys", bad, lambda m: replace(m, mask_key=bytes(32))))
    h.run()
    result = _assert_exact(h)
    assert set(h.server.excluded) == bad and not set(result.contributors) & bad


def test_a_client_refuses_a_bad_key_relayed_by_the_server():
    config = make_config(10, 4, dropout_rate=0.2, label="relay")
    h = Harness(config, label="relay")
    h.run(until=Phase.SHARE_KEYS)
    request = h.requests()[1]
    first = request.neighbour_keys[0]
    evil = replace(request, neighbour_keys=(NeighbourKeys(first.client, first.encryption_key, bytes(32)),
                                            *request.neighbour_keys[1:]))
    with pytest.raises(InconsistentRequest, match=f"relayed client {first.client}'s mask key"):
        h.clients[1].receive(encode(evil))


# --- share ciphertexts ---------------------------------------------------------------------------


def test_a_garbage_share_ciphertext_blames_its_sender_not_the_recipient():
    config = make_config(16, 6, dropout_rate=0.2, label="garbage")
    bad = 5

    def garble(msg):
        first = msg.encrypted_shares[0]
        return replace(msg, encrypted_shares=(EncryptedShares(first.peer, os.urandom(len(first.ciphertext))),
                                              *msg.encrypted_shares[1:]))

    h = Harness(config, label="garbage", tamper=_rewrite("ShareKeys", {bad}, garble))
    h.run()
    _assert_exact(h)
    assert set(h.server.excluded) == {bad} and isinstance(h.server.excluded[bad], BadShare)
    assert "does not open" in str(h.server.excluded[bad])
    assert not h.router.refusals  # the recipient complained and carried on


# --- equivocation and malformed frames ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["AdvertiseKeys", "ShareKeys", "MaskedInput", "UnmaskResponse"])
def test_two_different_frames_for_one_slot_exclude_the_sender(kind):
    config = make_config(14, 6, dropout_rate=0.2, label="equivocate")
    bad = 6

    def twice(sender, recipient, frame):
        if sender == bad and decode(frame).name == kind:
            other = bytearray(frame)
            other[-1] ^= 1  # a different, still well-formed frame (the last byte is payload)
            return [frame, bytes(other)]
        return [frame]

    h = Harness(config, label="equivocate", tamper=twice)
    h.run()
    result = _assert_exact(h)
    assert bad in h.server.excluded
    assert isinstance(h.server.excluded[bad], (Equivocation, MalformedMessage, BadShare))
    if kind == "MaskedInput":  # its first input was accumulated: it stays in the sum
        assert bad in result.contributors


def test_a_malformed_frame_excludes_its_sender_and_names_the_phase():
    config = make_config(10, 4, dropout_rate=0.2, label="garbled")
    h = Harness(config, label="garbled",
                tamper=lambda s, r, f: [f[:-3]] if s == 2 and r == 0 else [f])
    h.run()
    assert isinstance(h.server.excluded[2], MalformedMessage)
    assert "AdvertiseKeys" in str(h.server.excluded[2]) and h.server.excluded[2].phase == "AdvertiseKeys"
    _assert_exact(h)


# --- altered Shamir shares -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(6, 12), drop=st.sets(st.integers(1, 12), max_size=2), data=st.data())
def test_altered_shares_in_any_position_and_count_never_give_a_wrong_sum(n, drop, data):
    config = make_config(n, 5, dropout_rate=0.3, label=f"alter{n}")
    drop = {c for c in drop if c <= n}
    liars = data.draw(st.sets(st.sampled_from(list(config.clients)), max_size=n // 2))
    how = data.draw(st.sampled_from(["flip", "random", "consistent"]))

    def alter(msg):
        def bent(items):
            out = []
            for s in items:
                if data.draw(st.booleans()):
                    share = bytearray(s.share)
                    if how == "flip":
                        share[0] ^= 1
                    elif how == "random":
                        share[:4] = (int.from_bytes(os.urandom(4), "little") % (2**31)).to_bytes(4, "little")
                    else:  # the same offset on every liar's share of this peer
                        share[4] = (share[4] + 1) % 128
                    s = RevealedShare(s.peer, bytes(share))
                out.append(s)
            return tuple(out)
        return replace(msg, self_mask_shares=bent(msg.self_mask_shares), key_shares=bent(msg.key_shares))

    h = Harness(config, label=f"alter{n}", schedule={c: 2 for c in drop},
                tamper=_rewrite("UnmaskResponse", liars, alter))
    h.run()
    try:
        result = h.server.result()
    except RoundAborted as exc:
        assert exc.reason and exc.phase
        return
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))
    assert set(h.server.excluded) <= liars  # only liars are ever blamed


def test_a_few_altered_shares_are_found_blamed_and_the_round_completes():
    config = make_config(10, 5, label="few", full_graph=True, threshold=3)
    liar = 2

    def alter(msg):
        first = msg.self_mask_shares[0]
        bent = RevealedShare(first.peer, bytes([first.share[0] ^ 0x55]) + first.share[1:])
        return replace(msg, self_mask_shares=(bent, *msg.self_mask_shares[1:]))

    h = Harness(config, label="few", tamper=_rewrite("UnmaskResponse", {liar}, alter))
    h.run()
    result = _assert_exact(h)
    assert isinstance(h.server.excluded[liar], BadShare)
    assert "does not lie on the polynomial" in str(h.server.excluded[liar])
    assert liar in result.contributors  # its own input was already in the sum


# --- bounded work for every announced size ----------------------------------------------------------


@pytest.mark.parametrize("field, value, limit", [
    ("num_clients", 2_000_000, "clients"),
    ("dim", 200_000_000, "coordinates"),
])
def test_a_client_refuses_an_oversized_round_before_any_work(field, value, limit):
    config = make_config(10, 4, label="huge")
    big = replace(config, **{field: value}, bits=62, levels=config.levels)
    frame = encode(AdvertiseKeysRequest(session_id=big.session_id, round=big.round, sender=0, recipient=1,
                                        config=big))
    client = Client(1, np.zeros(4))
    misses = harary_graph.cache_info().misses
    with pytest.raises(InconsistentRequest, match=f"{value:,} {limit}; this client's limit is"):
        client.receive(frame)
    assert harary_graph.cache_info().misses == misses  # no graph was built
    assert client.state is ClientState.ERROR


def test_configured_limits_are_the_clients_own():
    config = make_config(10, 50, label="small-phone")
    frame = encode(AdvertiseKeysRequest(session_id=config.session_id, round=0, sender=0, recipient=1,
                                        config=config))
    with pytest.raises(InconsistentRequest, match="50 coordinates; this client's limit is 10"):
        Client(1, np.zeros(50), limits=ClientLimits(max_dim=10)).receive(frame)
    assert Client(1, np.zeros(50)).receive(frame)


def test_a_client_refuses_an_oversized_frame_before_parsing():
    client = Client(1)
    with pytest.raises(MalformedMessage, match="exceeds the limit"):
        client.receive(b"\x00" * (64 * 1024))


def test_peer_lost_drops_a_client_at_once_and_the_round_completes():
    config = make_config(20, 5, dropout_rate=0.3, label="lost")
    h = Harness(config, label="lost", schedule={3: 1, 9: 2, 15: 3}, announce_losses=True)
    h.run()
    result = _assert_exact(h)
    assert all(h.server.peers[c] is PeerState.DROPPED for c in (3, 9, 15))
    assert 15 in result.contributors and 9 not in result.contributors
