"""HKDF-SHA256 (RFC 5869) with explicit domain separation.

Every key secagg derives is bound to the protocol version, its purpose, a 32-byte session hash
and the two clients it belongs to, so that no key can be replayed across sessions, rounds, pairs or
purposes. The session hash covers the signed round config (hence its session label and round) and
the advertised public keys the key is derived from (``protocol.keys.pair_session``). The ``info`` string has fixed-width fields (see protocol_spec/SPEC.md, "Key schedule"),
so two different contexts can never encode to the same bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_LABEL = b"secagg/1"
SESSION_ID_BYTES = 16  # the session label in every frame's header, chosen with the config
SESSION_HASH_BYTES = 32  # SHA-256 of the signed config (and keys): what keys and signatures bind

PURPOSE_PAIRWISE_MASK = b"pairwise-mask"
PURPOSE_SHARE_ENCRYPTION = b"share-encryption"
# A commitment to a self-mask seed b_u: HKDF(b_u, this purpose, session, round, u, 0). The server
# checks a reconstructed b_u against it, so shares altered to fit one wrong polynomial are caught.
PURPOSE_SELF_MASK_COMMITMENT = b"self-mask-commitment"


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """Plain RFC 5869 HKDF-SHA256 (extract then expand)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def context_info(purpose: bytes, *, session: bytes, client_a: int, client_b: int) -> bytes:
    """``"secagg/1" || len(purpose) || purpose || session:32 || a:u32 || b:u32``."""
    if len(session) != SESSION_HASH_BYTES:
        raise ValueError(f"session must be a {SESSION_HASH_BYTES}-byte hash, got {len(session)} bytes")
    if not 0 < len(purpose) < 256:
        raise ValueError("purpose must be 1 to 255 bytes")
    return b"".join(
        (
            PROTOCOL_LABEL,
            bytes((len(purpose),)),
            purpose,
            session,
            client_a.to_bytes(4, "big"),
            client_b.to_bytes(4, "big"),
        )
    )


def derive_key(
    shared_secret: bytes,
    purpose: bytes,
    *,
    session: bytes,
    client_a: int,
    client_b: int,
    length: int = 32,
) -> bytes:
    """A 32-byte key for one purpose, one session hash and one ordered pair of clients."""
    info = context_info(purpose, session=session, client_a=client_a, client_b=client_b)
    return hkdf_sha256(shared_secret, salt=None, info=info, length=length)
