"""The protocol's key schedule, shared by client and server (SPEC.md, "Key schedule").

- session hash H: SHA-256("secagg/1 session" || config_message(config) || operator signature),
  where config_message is the canonical CBOR of (session label, round, the config's 12 fields)
  that the operator signs (an empty signature in unsigned rounds). Every signature and key binds
  H, so a config the server altered or replayed yields keys and signatures no honest party uses.
- pair session of u and v: SHA-256("secagg/1 pair" || H || lo:u32 || c_lo || s_lo || hi:u32 ||
  c_hi || s_hi), the hash of the signed config and all four keys the pair's secrets come from.
- pairwise mask seed of u and v: HKDF(X25519(s_u, s_v^PK), "pairwise-mask", pair session,
  min(u, v), max(u, v)); symmetric, so u and v derive the same seed.
- share-encryption key from u to v: HKDF(X25519(c_u, c_v^PK), "share-encryption", pair session,
  u, v); directional, so each key encrypts exactly one plaintext.
- associated data of that ciphertext: the same fixed-width context string.
- sign: client u adds +PRG(s_uv) when u < v and -PRG(s_uv) when u > v, so each pair cancels.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg.codec import canonical_cbor, config_to_wire
from secagg.crypto import aead, kex, sign
from secagg.crypto.sign import signed_context
from secagg.crypto.kdf import (
    PURPOSE_PAIRWISE_MASK,
    PURPOSE_SHARE_ENCRYPTION,
    context_info,
    derive_key,
)


def config_message(config) -> bytes:
    """What the operator signs: "secagg/1 config" || CBOR [session label, round, config fields]."""
    return b"secagg/1 config" + canonical_cbor([config.session_id, config.round, config_to_wire(config)])


def sign_config(config, operator_key) -> bytes:
    """The operator's Ed25519 signature over ``config`` (``operator_key``: anything with
    ``sign(message) -> 64 bytes``, e.g. ``model_signing.load_operator_key``'s key)."""
    return operator_key.sign(config_message(config))


def config_signature_fault(config, signature: bytes, operator_key: bytes) -> str | None:
    """Why an announced config does not carry the operator's signature, or None."""
    if not signature:
        return "the round config is not signed by the operator"
    if not sign.verify(operator_key, config_message(config), signature):
        return "the round config's signature does not verify under the operator's key (altered, or signed by someone else)"
    return None


def session_hash(config, config_signature: bytes = b"") -> bytes:
    """H = SHA-256("secagg/1 session" || config_message || signature): the session every key,
    ciphertext and signature of the round binds."""
    return hashlib.sha256(b"secagg/1 session" + config_message(config) + config_signature).digest()


def pair_session(session: bytes, a: int, keys_a: tuple[bytes, bytes], b: int, keys_b: tuple[bytes, bytes]) -> bytes:
    """SHA-256 of H and the advertised (c, s) keys of clients a and b, in id order: what the pair's
    KDF and AEAD bind, so a key derived from a substituted advert matches no honest party's."""
    (lo, k_lo), (hi, k_hi) = sorted(((a, keys_a), (b, keys_b)))
    return hashlib.sha256(b"".join((b"secagg/1 pair", session, lo.to_bytes(4, "big"), *k_lo,
                                    hi.to_bytes(4, "big"), *k_hi))).digest()


def pairwise_mask_seed(
    mask_private_key: bytes | X25519PrivateKey, peer_mask_key: bytes, *, session: bytes, a: int, b: int
) -> bytes:
    """``session``: the pair's ``pair_session``."""
    shared = kex.agree(mask_private_key, peer_mask_key)
    return derive_key(shared, PURPOSE_PAIRWISE_MASK, session=session, client_a=min(a, b), client_b=max(a, b))


def _share_key_and_ad(
    private_key: bytes | X25519PrivateKey, peer_key: bytes, *, session: bytes, sender: int, recipient: int
) -> tuple[bytes, bytes]:
    shared = kex.agree(private_key, peer_key)
    ctx = dict(session=session, client_a=sender, client_b=recipient)
    return derive_key(shared, PURPOSE_SHARE_ENCRYPTION, **ctx), context_info(PURPOSE_SHARE_ENCRYPTION, **ctx)


def seal_shares(
    plaintext: bytes, *, encryption_private_key: bytes | X25519PrivateKey, recipient_key: bytes,
    session: bytes, sender: int, recipient: int,
) -> bytes:
    key, ad = _share_key_and_ad(encryption_private_key, recipient_key, session=session, sender=sender,
                                recipient=recipient)
    return aead.seal(key, plaintext, ad)


def open_shares(
    ciphertext: bytes, *, encryption_private_key: bytes | X25519PrivateKey, sender_key: bytes,
    session: bytes, sender: int, recipient: int,
) -> bytes:
    key, ad = _share_key_and_ad(encryption_private_key, sender_key, session=session, sender=sender,
                                recipient=recipient)
    return aead.open_(key, ciphertext, ad)


def advert_message(session: bytes, client: int, encryption_key: bytes, mask_key: bytes) -> bytes:
    """What client ``client`` signs in an authenticated AdvertiseKeys (SPEC section 5.5):
    signed_context("advert", H, client) || c_pk || s_pk."""
    return signed_context(b"advert", session=session, signer=client) + encryption_key + mask_key


def survivor_set_bytes(survivors) -> bytes:
    """count:u32 || each survivor id:u32, ascending: the signed part every signer shares."""
    ids = np.array(sorted(survivors), dtype=">u4")
    return len(ids).to_bytes(4, "big") + ids.tobytes()


def survivors_message(session: bytes, client: int, survivors: bytes) -> bytes:
    """What client ``client`` signs in ConsistencyCheck: signed_context("survivors", H, client)
    || ``survivor_set_bytes(U3)``."""
    return signed_context(b"survivors", session=session, signer=client) + survivors


def mask_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds PRG(s_owner,peer) to its input, -1 if it subtracts it."""
    return 1 if owner < peer else -1
