"""Shamir t-of-k secret sharing of 32-byte secrets over GF(p), p = 2^31 + 11, with galois.

Theory of operation. A 256-bit secret is cut into nine 31-bit chunks (little-endian; the top chunk
holds 8 bits). Each chunk is the constant term of its own random polynomial of degree t - 1 over
GF(p); holder x receives the nine evaluations at x, 36 bytes. The prime is the one Google's
production SecAgg uses: it exceeds 2^31, so every chunk is a field element, and products fit in
64-bit integers, so galois runs it on its JIT path rather than on Python objects.

Splitting many secrets for the same holders is one Vandermonde-by-coefficients product.
Reconstruction of many secrets at once computes every secret's Lagrange coefficients at zero in
one batched pass (shape: secrets x t x t) and combines the shares with one reduction.

Validation follows the usual failure modes of Shamir code: x = 0 would be the secret itself, a
repeated x makes the Lagrange basis singular, fewer than t shares leave the secret undetermined,
and a share whose chunks are not field elements, or whose reconstruction overflows 256 bits, is
refused rather than silently reduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from secagg.crypto.randomness import DeterministicRandom, RandomSource
from secagg.errors import ShamirError

PRIME = 2**31 + 11
CHUNK_BITS = 31
SECRET_BYTES = 32
CHUNKS = -(-SECRET_BYTES * 8 // CHUNK_BITS)  # 9
SHARE_BYTES = 4 * CHUNKS  # 36

_BIT_WEIGHTS = (np.uint64(1) << np.arange(CHUNK_BITS, dtype=np.uint64)).astype(np.uint64)


@cache
def field():
    """GF(2^31 + 11), built on first use (galois compiles its kernels once per process)."""
    import galois

    return galois.GF(PRIME)


def warm_up() -> None:
    """Build the field and run each kernel once, so later timings measure the protocol only."""
    rng = DeterministicRandom("warm-up")
    secret = bytes(SECRET_BYTES)
    shares = split([secret], [1, 2, 3], 2, rng)
    reconstruct_many([[(1, shares[0][0]), (2, shares[1][0])]], 2)


def secrets_to_chunks(secrets: Sequence[bytes]) -> np.ndarray:
    """(m,) secrets of 32 bytes -> (m, 9) uint64 chunks of 31 bits each."""
    for s in secrets:
        if len(s) != SECRET_BYTES:
            raise ShamirError(f"a secret must be {SECRET_BYTES} bytes, got {len(s)}")
    raw = np.frombuffer(b"".join(secrets), dtype=np.uint8).reshape(len(secrets), SECRET_BYTES)
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    bits = np.pad(bits, ((0, 0), (0, CHUNKS * CHUNK_BITS - bits.shape[1])))
    return bits.reshape(len(secrets), CHUNKS, CHUNK_BITS).astype(np.uint64) @ _BIT_WEIGHTS


def chunks_to_secrets(chunks: np.ndarray) -> list[bytes]:
    """(m, 9) chunks -> m secrets. Refuses chunks that do not encode a 256-bit value."""
    chunks = np.asarray(chunks, dtype=np.uint64)
    if np.any(chunks >> np.uint64(CHUNK_BITS)):
        raise ShamirError("shares are inconsistent: the reconstructed value is not a secret")
    bits = ((chunks[..., None] >> np.arange(CHUNK_BITS, dtype=np.uint64)) & np.uint64(1)).astype(
        np.uint8
    )
    bits = bits.reshape(chunks.shape[0], CHUNKS * CHUNK_BITS)
    if np.any(bits[:, SECRET_BYTES * 8 :]):
        raise ShamirError("shares are inconsistent: the reconstructed value exceeds 256 bits")
    raw = np.packbits(bits[:, : SECRET_BYTES * 8], axis=1, bitorder="little")
    return [row.tobytes() for row in raw]


def random_field_elements(count: int, rng: RandomSource) -> np.ndarray:
    """``count`` uniform elements of GF(p) by rejection sampling 32-bit words from ``rng``."""
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        need = count - out.size
        words = np.frombuffer(rng(4 * (2 * need + 8)), dtype="<u4").astype(np.uint64)
        out = np.concatenate((out, words[words < PRIME][:need]))
    return out


def _check_xs(xs: np.ndarray) -> None:
    if xs.size and (xs.min() < 1 or xs.max() >= PRIME):
        raise ShamirError(f"share x-coordinates must lie in [1, {PRIME - 1}]")
    if np.unique(xs).size != xs.size:
        raise ShamirError("share x-coordinates must be distinct")


def split(
    secrets: Sequence[bytes], xs: Sequence[int], threshold: int, rng: RandomSource
) -> list[list[bytes]]:
    """Share each secret t-of-len(xs). ``result[i][j]`` is holder ``xs[i]``'s share of secret j."""
    xs_arr = np.asarray(xs, dtype=np.int64)
    _check_xs(xs_arr)
    if not 1 <= threshold <= len(xs_arr):
        raise ShamirError(f"threshold {threshold} must lie in [1, {len(xs_arr)}] (the holders)")
    GF = field()
    m = len(secrets)
    constant = secrets_to_chunks(secrets).reshape(1, m * CHUNKS)
    random_terms = random_field_elements((threshold - 1) * m * CHUNKS, rng)
    coefficients = GF(np.concatenate((constant.ravel(), random_terms)).reshape(threshold, m * CHUNKS))
    vandermonde = GF(xs_arr % PRIME)[:, None] ** np.arange(threshold)
    shares = np.asarray(vandermonde @ coefficients, dtype="<u4").reshape(len(xs_arr), m, SHARE_BYTES // 4)
    return [[row.tobytes() for row in holder] for holder in shares]


def _parse_shares(shares: Sequence[bytes]) -> np.ndarray:
    """Shares -> (len, 9) uint32 field elements, refusing wrong lengths and non-field values."""
    for share in shares:
        if len(share) != SHARE_BYTES:
            raise ShamirError(f"a share must be {SHARE_BYTES} bytes, got {len(share)}")
    values = np.frombuffer(b"".join(shares), dtype="<u4").reshape(len(shares), CHUNKS)
    if values.size and values.max() >= PRIME:
        raise ShamirError("a share holds a value outside the field")
    return values


def reconstruct_many(
    share_sets: Sequence[Sequence[tuple[int, bytes]]], threshold: int
) -> list[bytes]:
    """Recover one secret per share set, each from any ``threshold`` of its (x, share) pairs."""
    if not share_sets:
        return []
    if threshold < 1:
        raise ShamirError(f"threshold must be at least 1, got {threshold}")
    for i, shares in enumerate(share_sets):
        if len(shares) < threshold:
            raise ShamirError(f"secret {i}: {len(shares)} shares received, threshold is {threshold}")
    # Every share received is validated, though only the first t of each set are used.
    all_x = np.fromiter((x for shares in share_sets for x, _ in shares), dtype=np.int64)
    if all_x.min() < 1 or all_x.max() >= PRIME:
        raise ShamirError(f"share x-coordinates must lie in [1, {PRIME - 1}]")
    for shares in share_sets:
        if len({x for x, _ in shares}) != len(shares):
            raise ShamirError("share x-coordinates must be distinct")
    _parse_shares([share for shares in share_sets for _, share in shares[threshold:]])
    used = [pair for shares in share_sets for pair in shares[:threshold]]
    xs = np.fromiter((x for x, _ in used), dtype=np.int64).reshape(len(share_sets), threshold)
    ys = _parse_shares([share for _, share in used]).reshape(len(share_sets), threshold, CHUNKS)
    GF = field()
    X = GF(xs)
    # Lagrange basis at zero: lambda_i = prod_{j != i} x_j / (x_j - x_i).
    diff = X[:, None, :] - X[:, :, None]
    eye = np.eye(threshold, dtype=bool)
    diff[:, eye] = GF(1)
    numerators = np.multiply.reduce(X, axis=1)[:, None] / X
    lagrange = numerators / np.multiply.reduce(diff, axis=2)
    secrets = np.add.reduce(lagrange[:, :, None] * GF(ys), axis=1)
    return chunks_to_secrets(np.asarray(secrets, dtype=np.uint64))


def reconstruct(shares: Sequence[tuple[int, bytes]], threshold: int) -> bytes:
    return reconstruct_many([shares], threshold)[0]
