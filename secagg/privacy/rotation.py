"""Randomized Hadamard rotation (Kairouz et al. 2021, Sec. 4.2).

x -> H (s * x) / sqrt(D), with x zero-padded to D = 2^ceil(log2 d), s a vector of random signs
drawn from a per-round public seed (AES-CTR, so any implementation derives the same signs) and
H the D x D Walsh-Hadamard matrix. The map is orthogonal, so it keeps L2 norms, and it spreads a
vector's mass evenly over the coordinates: each rotated coordinate of a norm-C vector is a sum of
random +-x_i / sqrt(D), so coordinate-wise rounding and the modular wrap behave as for a flat
vector. The transform is O(D log D) whole-array butterflies.
"""

from __future__ import annotations

import numpy as np

from secagg.crypto import prg


def padded_dim(dim: int) -> int:
    return 1 << max(0, (dim - 1).bit_length())


def signs(seed: bytes, size: int) -> np.ndarray:
    """+-1.0 from the low bit of each PRG(seed) byte."""
    words = prg.expand(seed, -(-size // 4), np.uint32).view(np.uint8)[:size]
    return 1.0 - 2.0 * (words & 1).astype(np.float64)


def _fwht(v: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform of a length-2^k vector (a new array)."""
    v = v.astype(np.float64, copy=True)
    n, h = v.size, 1
    while h < n:
        blocks = v.reshape(-1, 2, h)
        a, b = blocks[:, 0, :].copy(), blocks[:, 1, :]
        blocks[:, 0, :] += b
        blocks[:, 1, :] = a - b
        h *= 2
    return v


def rotate(x: np.ndarray, seed: bytes) -> np.ndarray:
    size = padded_dim(x.size)
    padded = np.zeros(size)
    padded[: x.size] = x
    return _fwht(padded * signs(seed, size)) / np.sqrt(size)


def unrotate(y: np.ndarray, seed: bytes, dim: int) -> np.ndarray:
    """Inverse of :func:`rotate`, trimmed back to ``dim`` coordinates."""
    return (_fwht(y) / np.sqrt(y.size) * signs(seed, y.size))[:dim]
