"""HKDF-SHA256 (RFC 5869) with explicit domain separation.

Every key secagg derives is bound to the protocol version, its purpose, the session, the round
and the two clients it belongs to, so that no key can be replayed across sessions, rounds, pairs or
purposes. The ``info`` string has fixed-width fields (see protocol_spec/SPEC.md, "Key schedule"),
so two different contexts can never encode to the same bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_LABEL = b"secagg/1"
SESSION_ID_BYTES = 16

PURPOSE_PAIRWISE_MASK = b"pairwise-mask"
PURPOSE_SHARE_ENCRYPTION = b"share-encryption"
# A commitment to a self-mask seed b_u: HKDF(b_u, this purpose, session, round, u, 0). The server
# checks a reconstructed b_u against it, so shares altered to fit one wrong polynomial are caught.
PURPOSE_SELF_MASK_COMMITMENT = b"self-mask-commitment"


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """Plain RFC 5869 HKDF-SHA256 (extract then expand)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def context_info(
    purpose: bytes, *, session_id: bytes, round: int, client_a: int, client_b: int
) -> bytes:
    """``"secagg/1" || len(purpose) || purpose || session_id || round:u64 || a:u32 || b:u32``."""
    if len(session_id) != SESSION_ID_BYTES:
        raise ValueError(f"session_id must be {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    if not 0 < len(purpose) < 256:
        raise ValueError("purpose must be 1 to 255 bytes")
    return b"".join(
        (
            PROTOCOL_LABEL,
            bytes((len(purpose),)),
            purpose,
            session_id,
            round.to_bytes(8, "big"),
            client_a.to_bytes(4, "big"),
            client_b.to_bytes(4, "big"),
        )
    )


def derive_key(
    shared_secret: bytes,
    purpose: bytes,
    *,
    session_id: bytes,
    round: int,
    client_a: int,
    client_b: int,
    length: int = 32,
) -> bytes:
    """A 32-byte key for one purpose, one session, one round and one ordered pair of clients."""
    info = context_info(
        purpose, session_id=session_id, round=round, client_a=client_a, client_b=client_b
    )
    return hkdf_sha256(shared_secret, salt=None, info=info, length=length)
