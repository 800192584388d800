"""Ed25519 signatures (RFC 8032), for the authenticated protocol.

Keys travel raw: a 32-byte public key, a 64-byte signature. A client signs with its registered
identity key (``secagg.identity.ClientIdentity``, through pyca/cryptography; the protocol asks
only for a :class:`Signer`); :func:`verify` goes through PyNaCl (libsodium), whose ``crypto_sign_open`` refuses
small-order keys and non-canonical signatures. It returns a bool, never raises for a bad
signature or a malformed key, so a caller decides whom to blame. ``secagg.identity`` re-exports
it as ``verify_signature``: the one signature check of the whole library. Every signed
message starts with a fixed-width, purpose-labelled context (:func:`signed_context`), so a
signature made for one purpose, round config or signer can never stand for another.
"""

from __future__ import annotations

from typing import Protocol

import nacl.exceptions
import nacl.signing

from secagg.crypto.kdf import PROTOCOL_LABEL, SESSION_HASH_BYTES

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class Signer(Protocol):
    """What signs for a client: ``secagg.identity.ClientIdentity``, its registered Ed25519 key."""

    def sign(self, message: bytes) -> bytes: ...


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message``. Never raises
    for bad input: a key or signature of the wrong length or type, a small-order key and a forged
    signature are all simply False."""
    if (not isinstance(public_key, (bytes, bytearray)) or len(public_key) != PUBLIC_KEY_BYTES
            or not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES
            or not isinstance(message, (bytes, bytearray, memoryview))):
        return False
    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def signed_context(purpose: bytes, *, session: bytes, signer: int) -> bytes:
    """``"secagg/1 sig" || len(purpose) || purpose || session:32 || signer:u32``; ``session`` is
    the round's session hash (``protocol.keys.session_hash``), which covers its session and round."""
    if len(session) != SESSION_HASH_BYTES or not 0 < len(purpose) < 256:
        raise ValueError("a signed context needs a 32-byte session hash and a 1-255 byte purpose")
    return b"".join((PROTOCOL_LABEL, b" sig", bytes((len(purpose),)), purpose, session,
                     signer.to_bytes(4, "big")))
