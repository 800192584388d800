"""Injected randomness.

Every randomized function in secagg takes a ``RandomSource``: a callable that returns ``n``
uniformly random bytes. Production paths use :func:`os.urandom` (the OS CSPRNG). Tests and the
transcript vector use :class:`DeterministicRandom`, an AES-256-CTR keystream under a fixed key, so
that a whole round is reproducible byte for byte (pyca's ``_encrypt_from_parts`` pattern).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

RandomSource = Callable[[int], bytes]

system_random: RandomSource = os.urandom


class DeterministicRandom:
    """A reproducible byte stream for tests: AES-256-CTR keyed by SHA-256(label).

    Never use it for a real round: anyone who knows the label knows every secret.
    """

    def __init__(self, label: bytes | str) -> None:
        if isinstance(label, str):
            label = label.encode()
        self._key = hashlib.sha256(b"secagg/1 deterministic-random\x00" + label).digest()
        self._offset = 0  # plain state, so a test can copy a party mid-round

    def __call__(self, n: int) -> bytes:
        block, skip = divmod(self._offset, 16)
        counter = block.to_bytes(16, "big")
        stream = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor().update(bytes(skip + n))
        self._offset += n
        return stream[skip:]

    def fork(self, label: bytes | str) -> DeterministicRandom:
        """An independent stream derived from this one, for a sub-party."""
        if isinstance(label, str):
            label = label.encode()
        return DeterministicRandom(self(32) + label)
