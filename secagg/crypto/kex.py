"""X25519 key agreement (RFC 7748) over pyca/cryptography.

Keys travel as their raw 32-byte encodings. A peer key that yields the all-zero shared secret
(a low-order point) is refused: cryptography raises, and we turn that into ``CryptoError``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from secagg.crypto.randomness import RandomSource
from secagg.errors import CryptoError

KEY_BYTES = 32


def generate_keypair(rng: RandomSource) -> tuple[bytes, bytes]:
    """Return ``(private_key, public_key)``, both raw 32 bytes, with the private key from ``rng``."""
    private = rng(KEY_BYTES)
    return private, public_key(private)


def public_key(private_key: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private_key)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_private(private_key: bytes) -> X25519PrivateKey:
    """Parse a raw private key once; agreeing with many peers then skips the parse."""
    return X25519PrivateKey.from_private_bytes(private_key)


def agree(private_key: bytes | X25519PrivateKey, peer_public_key: bytes) -> bytes:
    """The raw X25519 shared secret. Raises ``CryptoError`` for an unusable peer key."""
    try:
        if isinstance(private_key, bytes):
            private_key = load_private(private_key)
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    except ValueError:
        raise CryptoError("key agreement failed") from None
