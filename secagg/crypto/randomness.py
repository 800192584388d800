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
        key = hashlib.sha256(b"secagg/1 deterministic-random\x00" + label).digest()
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def __call__(self, n: int) -> bytes:
        return self._encryptor.update(bytes(n))

    def fork(self, label: bytes | str) -> DeterministicRandom:
        """An independent stream derived from this one, for a sub-party."""
        if isinstance(label, str):
            label = label.encode()
        return DeterministicRandom(self(32) + label)
