"""The protocol's key schedule, shared by client and server (SPEC.md, "Key schedule").

- pairwise mask seed of u and v: HKDF(X25519(s_u, s_v^PK), "pairwise-mask", session, round,
  min(u, v), max(u, v)); symmetric, so u and v derive the same seed.
- share-encryption key from u to v: HKDF(X25519(c_u, c_v^PK), "share-encryption", session, round,
  u, v); directional, so each key encrypts exactly one plaintext.
- associated data of that ciphertext: the same fixed-width context string, binding session, round,
  sender and recipient.
- sign: client u adds +PRG(s_uv) when u < v and -PRG(s_uv) when u > v, so each pair cancels.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg.crypto import aead, kex
from secagg.crypto.sign import signed_context
from secagg.crypto.kdf import (
    PURPOSE_PAIRWISE_MASK,
    PURPOSE_SHARE_ENCRYPTION,
    context_info,
    derive_key,
)


def pairwise_mask_seed(
    mask_private_key: bytes | X25519PrivateKey, peer_mask_key: bytes, *, session_id: bytes, round: int, a: int, b: int
) -> bytes:
    shared = kex.agree(mask_private_key, peer_mask_key)
    lo, hi = min(a, b), max(a, b)
    return derive_key(
        shared, PURPOSE_PAIRWISE_MASK, session_id=session_id, round=round, client_a=lo, client_b=hi
    )


def _share_key_and_ad(
    private_key: bytes | X25519PrivateKey, peer_key: bytes, *, session_id: bytes, round: int, sender: int, recipient: int
) -> tuple[bytes, bytes]:
    shared = kex.agree(private_key, peer_key)
    ctx = dict(session_id=session_id, round=round, client_a=sender, client_b=recipient)
    key = derive_key(shared, PURPOSE_SHARE_ENCRYPTION, **ctx)
    return key, context_info(PURPOSE_SHARE_ENCRYPTION, **ctx)


def seal_shares(
    plaintext: bytes, *, encryption_private_key: bytes | X25519PrivateKey, recipient_key: bytes,
    session_id: bytes, round: int, sender: int, recipient: int,
) -> bytes:
    key, ad = _share_key_and_ad(
        encryption_private_key, recipient_key,
        session_id=session_id, round=round, sender=sender, recipient=recipient,
    )
    return aead.seal(key, plaintext, ad)


def open_shares(
    ciphertext: bytes, *, encryption_private_key: bytes | X25519PrivateKey, sender_key: bytes,
    session_id: bytes, round: int, sender: int, recipient: int,
) -> bytes:
    key, ad = _share_key_and_ad(
        encryption_private_key, sender_key,
        session_id=session_id, round=round, sender=sender, recipient=recipient,
    )
    return aead.open_(key, ciphertext, ad)


def advert_message(config, client: int, encryption_key: bytes, mask_key: bytes) -> bytes:
    """What client ``client`` signs in an authenticated AdvertiseKeys (SPEC section 5.5):
    signed_context("advert", session, round, client) || c_pk || s_pk."""
    return signed_context(b"advert", session_id=config.session_id, round=config.round,
                          signer=client) + encryption_key + mask_key


def survivor_set_bytes(survivors) -> bytes:
    """count:u32 || each survivor id:u32, ascending: the signed part every signer shares."""
    ids = np.array(sorted(survivors), dtype=">u4")
    return len(ids).to_bytes(4, "big") + ids.tobytes()


def survivors_message(config, client: int, survivors: bytes) -> bytes:
    """What client ``client`` signs in ConsistencyCheck: signed_context("survivors", session,
    round, client) || ``survivor_set_bytes(U3)``."""
    return signed_context(b"survivors", session_id=config.session_id, round=config.round,
                          signer=client) + survivors


def mask_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds PRG(s_owner,peer) to its input, -1 if it subtracts it."""
    return 1 if owner < peer else -1
