"""X25519 key agreement (RFC 7748) over pyca/cryptography.

Keys travel as their raw 32-byte encodings. :func:`check_public_key` is the gate every advertised
key passes (server before relaying, clients again before use): it refuses a non-canonical encoding
(u >= p, or the top bit set) and the low-order points, whose shared secret is all zero whatever
the private key (RFC 7748, section 6.1; the list is libsodium's blocklist reduced mod p). It does
not test curve membership: Curve25519 is twist-secure (a clamped scalar times a twist point lies
in the twist's large prime-order subgroup, so it leaks nothing and is as unpredictable as a
curve point), and the test costs a 255-bit modular exponentiation, 0.15 ms, per key: 10 ms per
client at k = 36, more than all its other key work. A peer key that still yields the all-zero
secret in :func:`agree` raises ``CryptoError``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from secagg.crypto.randomness import RandomSource
from secagg.errors import CryptoError

KEY_BYTES = 32
FIELD_PRIME = 2**255 - 19
# u-coordinates of the points of order 1, 2, 4 and 8 on Curve25519 and its twist, canonical.
LOW_ORDER_U = frozenset({
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    FIELD_PRIME - 1,
})


def public_key_fault(key: bytes) -> str | None:
    """Why ``key`` is not an acceptable X25519 public key, or None if it is."""
    if type(key) is not bytes or len(key) != KEY_BYTES:
        return f"a public key must be {KEY_BYTES} bytes"
    u = int.from_bytes(key, "little")
    if u >= FIELD_PRIME:
        return "a non-canonical encoding (u >= 2^255 - 19 or the top bit set)"
    if u in LOW_ORDER_U:
        return "a low-order point (its shared secret is all zero)"
    return None


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
