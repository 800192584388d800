"""Layer 1: known-answer tests for every primitive, from protocol_spec/vectors/."""

import numpy as np
import pytest

from secagg.crypto import aead, kdf, kex, prg
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import CryptoError
from secagg.protocol import keys

from conftest import load_vectors


def test_x25519_rfc7748():
    for v in load_vectors("x25519.json")["vectors"]:
        a, b = bytes.fromhex(v["alice_private"]), bytes.fromhex(v["bob_private"])
        assert kex.public_key(a).hex() == v["alice_public"]
        assert kex.public_key(b).hex() == v["bob_public"]
        assert kex.agree(a, bytes.fromhex(v["bob_public"])).hex() == v["shared"]
        assert kex.agree(b, bytes.fromhex(v["alice_public"])).hex() == v["shared"]


def test_x25519_refuses_low_order_point():
    with pytest.raises(CryptoError) as info:
        kex.agree(bytes(range(32)), bytes(32))
    assert str(info.value) == "key agreement failed"


def test_hkdf_rfc5869():
    for v in load_vectors("hkdf_sha256.json")["vectors"]:
        okm = kdf.hkdf_sha256(
            bytes.fromhex(v["ikm"]), salt=bytes.fromhex(v["salt"]) or None,
            info=bytes.fromhex(v["info"]), length=v["length"],
        )
        assert okm.hex() == v["okm"], v["name"]


def test_aes_ctr_nist_sp800_38a():
    v = load_vectors("aes_ctr.json")["vectors"][0]
    keystream = bytes(a ^ b for a, b in zip(bytes.fromhex(v["plaintext"]), bytes.fromhex(v["ciphertext"])))
    out = np.empty(len(keystream) // 4, dtype=np.uint32)
    prg.keystream_into(bytes.fromhex(v["key"]), bytes.fromhex(v["initial_counter"]), out)
    assert out.tobytes() == keystream


def test_aes_gcm_test_case_16():
    v = load_vectors("aes_gcm.json")["vectors"][0]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    ad, pt = bytes.fromhex(v["associated_data"]), bytes.fromhex(v["plaintext"])
    sealed = aead.seal(key, pt, ad, nonce)
    assert sealed.hex() == v["ciphertext"] + v["tag"]
    assert aead.open_(key, sealed, ad, nonce) == pt


@pytest.mark.parametrize("flip", ["ciphertext", "tag", "ad", "key"])
def test_aead_failure_says_nothing_about_which_check(flip):
    key, ad = bytes(32), b"context"
    sealed = bytearray(aead.seal(key, b"secret shares", ad))
    if flip == "ciphertext":
        sealed[0] ^= 1
    elif flip == "tag":
        sealed[-1] ^= 1
    elif flip == "ad":
        ad = b"contexT"
    else:
        key = b"\x01" + key[1:]
    with pytest.raises(CryptoError) as info:
        aead.open_(key, bytes(sealed), ad)
    assert str(info.value) == "decryption failed"


def test_mask_prg_vectors():
    for v in load_vectors("mask_prg.json")["vectors"]:
        words = prg.expand(bytes.fromhex(v["seed"]), len(v["words"]), np.dtype(v["dtype"]).type)
        assert [int(w) for w in words] == v["words"]


def test_mask_prg_is_the_aes_ctr_keystream_with_zero_counter():
    seed = DeterministicRandom("prg")(32)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    ref = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(4000))
    assert prg.expand(seed, 1000).tobytes() == ref
    assert prg.expand(seed, 500, np.uint64).tobytes() == ref


def test_mask_prg_refuses_bad_seed_and_buffer():
    with pytest.raises(ValueError):
        prg.expand(bytes(31), 4)
    with pytest.raises(ValueError):
        prg.expand_into(bytes(32), np.empty(4, dtype=np.int32))
    with pytest.raises(ValueError):
        prg.expand_into(bytes(32), np.empty(8, dtype=np.uint32)[::2])


def test_key_schedule_vectors():
    from secagg.model_signing import operator_key_from_seed
    from secagg.protocol.keys import config_message, session_hash, sign_config, pair_session
    from secagg.codec import decode

    v = load_vectors("key_schedule.json")
    # The config is codec.json's AdvertiseKeysRequest's.
    frame = next(f for f in load_vectors("codec.json")["vectors"] if f["type"] == "AdvertiseKeysRequest")
    config = decode(bytes.fromhex(frame["frame"])).config
    assert config_message(config).hex() == v["config_message"]
    operator = operator_key_from_seed(bytes.fromhex(v["operator_seed"]))
    assert sign_config(config, operator).hex() == v["config_signature"]  # Ed25519 is deterministic
    session = session_hash(config, bytes.fromhex(v["config_signature"]))
    assert session.hex() == v["session_hash"] and session_hash(config).hex() == v["session_hash_unsigned"]
    priv = {n: bytes.fromhex(v[f"{n}_private"]) for n in ("a_c", "a_s", "b_c", "b_s")}
    pub = {n: bytes.fromhex(v[f"{n}_public"]) for n in ("a_c", "a_s", "b_c", "b_s")}
    assert all(kex.public_key(priv[n]) == pub[n] for n in priv)
    pair = pair_session(session, 3, (pub["a_c"], pub["a_s"]), 9, (pub["b_c"], pub["b_s"]))
    assert pair == pair_session(session, 9, (pub["b_c"], pub["b_s"]), 3, (pub["a_c"], pub["a_s"]))
    assert pair.hex() == v["pair_session"]
    info = kdf.context_info(kdf.PURPOSE_PAIRWISE_MASK, session=pair, client_a=3, client_b=9)
    assert info.hex() == v["pairwise_info"]
    seed_ab = keys.pairwise_mask_seed(priv["a_s"], pub["b_s"], session=pair, a=3, b=9)
    seed_ba = keys.pairwise_mask_seed(priv["b_s"], pub["a_s"], session=pair, a=9, b=3)
    assert seed_ab.hex() == seed_ba.hex() == v["pairwise_mask_seed"]
    sealed = keys.seal_shares(bytes(range(72)), encryption_private_key=priv["a_c"],
                              recipient_key=pub["b_c"], session=pair, sender=3, recipient=9)
    assert sealed.hex() == v["sealed_3_to_9"]
    opened = keys.open_shares(sealed, encryption_private_key=priv["b_c"], sender_key=pub["a_c"],
                              session=pair, sender=3, recipient=9)
    assert opened == bytes(range(72))


def test_share_ciphertext_is_bound_to_direction_and_session():
    rng = DeterministicRandom("binding")
    a, b = rng(32), rng(32)
    sealed = keys.seal_shares(b"x" * 72, encryption_private_key=a, recipient_key=kex.public_key(b),
                              session=bytes(32), sender=1, recipient=2)
    for changed in (dict(sender=2, recipient=1), dict(session=b"\x01" * 32)):
        args = {"session": bytes(32), "sender": 1, "recipient": 2, **changed}
        with pytest.raises(CryptoError):
            keys.open_shares(sealed, encryption_private_key=b, sender_key=kex.public_key(a), **args)


def test_the_pair_session_changes_with_every_key_and_the_config():
    from secagg.protocol.keys import pair_session

    k = [bytes([i]) * 32 for i in range(4)]
    base = pair_session(bytes(32), 1, (k[0], k[1]), 2, (k[2], k[3]))
    others = {pair_session(bytes(32), 1, (k[0], k[1]), 2, (k[2], k[0])),
              pair_session(bytes(32), 1, (k[1], k[1]), 2, (k[2], k[3])),
              pair_session(b"\x01" * 32, 1, (k[0], k[1]), 2, (k[2], k[3])),
              pair_session(bytes(32), 1, (k[0], k[1]), 3, (k[2], k[3]))}
    assert base not in others and len(others) == 4


def test_context_info_is_injective_across_fields():
    base = dict(session=bytes(32), client_a=2, client_b=3)
    infos = {
        kdf.context_info(kdf.PURPOSE_PAIRWISE_MASK, **base),
        kdf.context_info(kdf.PURPOSE_SHARE_ENCRYPTION, **base),
        kdf.context_info(kdf.PURPOSE_PAIRWISE_MASK, **{**base, "client_a": 3, "client_b": 2}),
        kdf.context_info(kdf.PURPOSE_PAIRWISE_MASK, **{**base, "session": b"\x01" + bytes(31)}),
    }
    assert len(infos) == 4
    with pytest.raises(ValueError, match="32-byte"):
        kdf.context_info(kdf.PURPOSE_PAIRWISE_MASK, **{**base, "session": bytes(16)})


def test_deterministic_random_is_reproducible_and_forks_independently():
    a, b = DeterministicRandom("x"), DeterministicRandom("x")
    assert a(40) == b(40)
    assert a.fork("p")(16) != a.fork("q")(16)


def test_ed25519_rfc8032_test_1():
    from secagg.crypto import sign
    from secagg.identity import ClientIdentity

    key = ClientIdentity.from_seed(1, bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    public = key.public_key_bytes
    assert public.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    signature = key.sign(b"")
    assert signature.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
        "d25bf5f0595bbe24655141438e7a100b")
    assert sign.verify(public, b"", signature)
    assert not sign.verify(public, b"x", signature)
    assert not sign.verify(public, b"", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not sign.verify(bytes(31), b"", signature) and not sign.verify(public, b"", b"")


def test_signed_contexts_differ_by_every_field():
    from secagg.crypto.sign import signed_context

    base = dict(session=bytes(32), signer=2)
    contexts = {
        signed_context(b"advert", **base),
        signed_context(b"survivors", **base),
        signed_context(b"advert", **{**base, "session": b"\x01" * 32}),
        signed_context(b"advert", **{**base, "signer": 3}),
    }
    assert len(contexts) == 4
