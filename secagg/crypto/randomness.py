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

    def fork(self, *labels: bytes | str | int) -> DeterministicRandom:
        """An independent stream for a sub-party, named by ``labels``: derived from this stream's
        key and the labels alone, never from how much of this stream was read, so adding a draw
        anywhere leaves every other party's stream unchanged."""
        key = self._key
        for label in labels:  # so fork(a, b) is fork(a).fork(b)
            key = hashlib.sha256(b"secagg/1 fork\x00" + key + _encode_labels((label,))).digest()
        child = DeterministicRandom(b"")
        child._key = key
        return child


def _encode_labels(labels: tuple) -> bytes:
    out = []
    for label in labels:
        if isinstance(label, int) and not isinstance(label, bool):
            raw, kind = str(label).encode(), b"i"
        elif isinstance(label, str):
            raw, kind = label.encode(), b"s"
        elif isinstance(label, bytes):
            raw, kind = label, b"b"
        else:
            raise TypeError(f"a randomness label must be str, int or bytes, got {type(label).__name__}")
        out.append(kind + len(raw).to_bytes(4, "big") + raw)
    return b"".join(out)


def fork(rng: RandomSource, *labels: bytes | str | int) -> RandomSource:
    """The stream for a sub-party: ``rng.fork(*labels)`` for a deterministic source; the OS
    CSPRNG (or any plain callable) is its own fork, since its draws are independent anyway."""
    method = getattr(rng, "fork", None)
    return method(*labels) if method is not None else rng
