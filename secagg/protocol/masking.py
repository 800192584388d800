"""Adding and removing masks: the one hot loop of both client and server.

Each mask is an AES-256-CTR keystream expanded into one reused buffer and added to (or subtracted
from) the target in place, so a d-coordinate vector costs one keystream pass and one add per mask
and no allocation. Reduction mod 2^b happens once at the end: 2^b divides the word size, so
wrapping at 2^32 or 2^64 in between loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from secagg.crypto import prg


def apply_masks(target: np.ndarray, masks: Iterable[tuple[bytes, int]], bits: int, start: int = 0) -> int:
    """``target += sum(sign * PRG(seed))`` mod 2^bits, in place. Returns the number of masks.
    ``start``: ``target`` holds words start .. start + len(target) of the vector (a shard; on a
    16-byte block), so each mask is expanded from there."""
    buffer = np.empty_like(target)
    count = 0
    for seed, sign in masks:
        prg.expand_range_into(seed, start, buffer)
        if sign > 0:
            np.add(target, buffer, out=target)
        else:
            np.subtract(target, buffer, out=target)
        count += 1
    if bits not in (32, 64):
        np.bitwise_and(target, target.dtype.type((1 << bits) - 1), out=target)
    return count
