"""AES-256-GCM for the encrypted Shamir shares.

Each share-encryption key is derived for one (session, round, sender, recipient) and encrypts
exactly one plaintext, so the fixed all-zero nonce never repeats under a key (SPEC.md, "Encrypted
shares"). The associated data binds session, round, sender and recipient as well, so a ciphertext
moved to another pair or round fails to open. Failure says only that it failed.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.errors import CryptoError

NONCE_BYTES = 12
TAG_BYTES = 16
ZERO_NONCE = bytes(NONCE_BYTES)


def seal(key: bytes, plaintext: bytes, associated_data: bytes, nonce: bytes = ZERO_NONCE) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_(key: bytes, ciphertext: bytes, associated_data: bytes, nonce: bytes = ZERO_NONCE) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except (InvalidTag, ValueError):
        raise CryptoError("decryption failed") from None
