"""The mask PRG: AES-256-CTR keystream written straight into NumPy buffers.

A 32-byte seed is the AES-256 key; the initial counter block is all zeros. The keystream bytes,
read as little-endian words, are the mask, reduced mod 2^b by the caller's bit mask. Because 2^b
divides 2^32 (or 2^64), the low b bits of a uniform word are uniform: no rejection is needed.

Expansion writes into the caller's preallocated array with ``update_into``, so a d-word mask costs
one keystream pass and no allocation. The all-zero plaintext is a shared read-only buffer.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
_INITIAL_COUNTER = bytes(16)
_zeros = np.zeros(0, dtype=np.uint8)


def _zero_bytes(n: int) -> np.ndarray:
    global _zeros
    if _zeros.size < n:
        _zeros = np.zeros(max(n, 2 * _zeros.size), dtype=np.uint8)
        _zeros.flags.writeable = False
    return _zeros[:n]


def keystream_into(key: bytes, counter_block: bytes, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous) with the AES-CTR keystream for ``key`` and ``counter_block``."""
    if not out.flags.c_contiguous:
        raise ValueError("mask buffer must be C-contiguous")
    view = memoryview(out).cast("B")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    encryptor.update_into(_zero_bytes(view.nbytes), view)


def expand_into(seed: bytes, out: np.ndarray) -> np.ndarray:
    """Expand a 32-byte seed into ``out`` (uint32 or uint64). Returns ``out``."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if out.dtype not in (np.uint32, np.uint64):
        raise ValueError(f"mask buffer must be uint32 or uint64, got {out.dtype}")
    keystream_into(seed, _INITIAL_COUNTER, out)
    if not np.little_endian:  # the spec reads keystream words little-endian
        out.byteswap(inplace=True)
    return out


BLOCK_BYTES = 16


def expand_range_into(seed: bytes, start: int, out: np.ndarray) -> np.ndarray:
    """Words ``start .. start + len(out)`` of the mask ``expand_into(seed, ...)`` would make, into
    ``out``: AES-CTR starts at any block, so a mask splits by coordinate range (sharded
    unmasking). ``start`` must fall on a 16-byte block (a multiple of 4 uint32 or 2 uint64 words)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if out.dtype not in (np.uint32, np.uint64):
        raise ValueError(f"mask buffer must be uint32 or uint64, got {out.dtype}")
    offset = start * out.dtype.itemsize
    if start < 0 or offset % BLOCK_BYTES:
        raise ValueError(f"a mask range must start on a {BLOCK_BYTES}-byte block, got word {start}")
    keystream_into(seed, (offset // BLOCK_BYTES).to_bytes(BLOCK_BYTES, "big"), out)
    if not np.little_endian:
        out.byteswap(inplace=True)
    return out


def expand(seed: bytes, length: int, dtype: type = np.uint32) -> np.ndarray:
    return expand_into(seed, np.empty(length, dtype=dtype))
