"""Shamir t-of-k secret sharing of 32-byte secrets over GF(p), p = 2^31 + 11.

Theory of operation. A 256-bit secret is cut into nine 31-bit chunks (little-endian; the top chunk
holds 8 bits). Each chunk is the constant term of its own random polynomial of degree t - 1 over
GF(p); holder x receives the nine evaluations at x, 36 bytes. The prime is the one Google's
production SecAgg uses: it exceeds 2^31, so every chunk is a field element, and products of two
field elements fit in 64-bit integers.

Splitting is the client's only Shamir work, and it runs in plain NumPy: Horner's rule mod p on
uint64, where (p - 1)^2 + (p - 1) < 2^63 never overflows. It is tested against galois's
evaluation and the published vectors, so a client never imports galois (whose import and kernel
compilation cost a short-lived client more than the round itself).

Reconstruction is the server's, and it uses galois, imported on first use. The field is built
with its known primitive element (2, checked once in the tests) and without galois's verification,
and it computes in galois's "python-calculate" mode for small batches and switches to its JIT
kernels once a batch is large enough to repay their compilation (``JIT_WORK``). Many secrets are
reconstructed at once: every secret's Lagrange coefficients at zero in one batched pass (shape:
secrets x t x t), combined with the shares in one reduction.

``recover_many`` is the server's robust path (issue 8, "never a wrong sum"). All shares of one
secret must lie on one polynomial of degree t - 1, so every share beyond the first t is checked
against the interpolation of the first t (one batched pass over all sets of the same size). Where a set does
not fit, Berlekamp-Welch decoding (a Reed-Solomon decoder for arbitrary evaluation points; galois's
``ReedSolomon`` fixes the points to powers of alpha, which client ids are not) finds the polynomial
within the unique-decoding radius: with m well-formed shares it corrects up to (m - t) // 2 altered
ones and names them. What it cannot do, nothing can: with m == t every share set fits some
polynomial, and more than (m - t) // 2 altered shares that the attacker made agree with one another
can outvote the honest ones. The caller detects those only with a commitment to the secret.

Validation follows the usual failure modes of Shamir code: x = 0 would be the secret itself, a
repeated x makes the Lagrange basis singular, fewer than t shares leave the secret undetermined,
and a share whose chunks are not field elements, or whose reconstruction overflows 256 bits, is
refused rather than silently reduced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from secagg.crypto.randomness import DeterministicRandom, RandomSource
from secagg.errors import ShamirError

PRIME = 2**31 + 11
PRIMITIVE_ELEMENT = 2  # the smallest generator of GF(p)*; p - 1 = 2 * 3 * 149 * 2402107
CHUNK_BITS = 31
SECRET_BYTES = 32
CHUNKS = -(-SECRET_BYTES * 8 // CHUNK_BITS)  # 9
SHARE_BYTES = 4 * CHUNKS  # 36

# Batches whose field work reaches this many element operations run on galois's JIT kernels;
# smaller ones on its pure-Python path, which needs no compilation. On the bench machine (AMD EPYC,
# galois 0.4.11) a pure-Python element operation costs about 0.33 us and the JIT's first
# compilation 0.45-0.6 s (more on a cold disk cache): reconstructing 2,000 secrets at t = 17
# (1.8 million operations) took 0.63 s in Python and 0.59 s on the JIT, compilation included.
JIT_WORK = 2_000_000

RECOVER_BATCH = 1024  # secrets per batched pass of recover_many

_BIT_WEIGHTS = (np.uint64(1) << np.arange(CHUNK_BITS, dtype=np.uint64)).astype(np.uint64)
_P = np.uint64(PRIME)

_jit_compiled = False


@cache
def _galois_field():
    import galois

    # verify=False skips galois's primality and primitivity checks (and the JIT compilation they
    # trigger); tests/test_shamir.py checks both facts once.
    return galois.GF(PRIME, primitive_element=PRIMITIVE_ELEMENT, verify=False, compile="python-calculate")


def field(work: int = 0):
    """GF(2^31 + 11) from galois, in the compile mode that suits ``work`` (see ``JIT_WORK``).

    Once the JIT kernels have been compiled they are used for every later batch. Both modes
    compute the same values (tested), so a switch made by another thread changes speed, never results;
    hence no lock (the core imports no threading).
    """
    global _jit_compiled
    GF = _galois_field()
    if _jit_compiled or work >= JIT_WORK:
        _jit_compiled = True
        mode = "jit-calculate"
    else:
        mode = "python-calculate"
    if GF.ufunc_mode != mode:
        GF.compile(mode)
    return GF


def warm_up(*, jit: bool = False) -> None:
    """Build the field and run reconstruction once, so later timings measure the protocol only.

    ``jit=True`` also compiles galois's JIT kernels (about a second): do it before timing a server
    that reconstructs large batches. A client never needs this; its split imports no galois.
    """
    rng = DeterministicRandom("warm-up")
    shares = split([bytes(SECRET_BYTES)], [1, 2, 3], 2, rng)
    pairs = [[(1, shares[0][0]), (2, shares[1][0]), (3, shares[2][0])]]
    reconstruct_many(pairs, 2)
    recover_many(pairs, 2)
    if jit:
        field(JIT_WORK)
        reconstruct_many(pairs, 2)
        recover_many(pairs, 2)


def warm_up_for_round(clients: int, threshold: int) -> None:
    """``warm_up`` before a server's round of ``clients`` at ``threshold``: the JIT kernels too
    when its reconstruction (about n t^2 chunk operations) is big enough to use them. Once per
    process, before the round: not a per-round cost, so not inside a timer or a deadline."""
    warm_up(jit=clients * threshold**2 * CHUNKS >= JIT_WORK)


def secrets_to_chunks(secrets: Sequence[bytes]) -> np.ndarray:
    """(m,) secrets of 32 bytes -> (m, 9) uint64 chunks of 31 bits each."""
    for s in secrets:
        if len(s) != SECRET_BYTES:
            raise ShamirError(f"a secret must be {SECRET_BYTES} bytes, got {len(s)}")
    raw = np.frombuffer(b"".join(secrets), dtype=np.uint8).reshape(len(secrets), SECRET_BYTES)
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    bits = np.pad(bits, ((0, 0), (0, CHUNKS * CHUNK_BITS - bits.shape[1])))
    return bits.reshape(len(secrets), CHUNKS, CHUNK_BITS).astype(np.uint64) @ _BIT_WEIGHTS


def _valid_chunks(chunks: np.ndarray) -> np.ndarray:
    """(m, 9) chunks -> (m,) bool: does each row encode a 256-bit value?"""
    chunks = np.asarray(chunks, dtype=np.uint64)
    top_bits = SECRET_BYTES * 8 - (CHUNKS - 1) * CHUNK_BITS  # 8
    return ~np.any(chunks >> np.uint64(CHUNK_BITS), axis=1) & (chunks[:, -1] >> np.uint64(top_bits) == 0)


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


def evaluate(coefficients: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Polynomials mod p at the points ``xs``, by Horner's rule on uint64.

    ``coefficients``: (t, columns) field elements, constant term first, one polynomial per column.
    Returns (len(xs), columns): row i holds every polynomial at xs[i]. Inputs below p keep every
    intermediate below (p - 1)^2 + (p - 1) < 2^63.
    """
    coefficients = np.asarray(coefficients, dtype=np.uint64)
    x = (np.asarray(xs, dtype=np.uint64) % _P)[:, None]
    acc = np.repeat(coefficients[-1][None, :], x.shape[0], axis=0)
    for c in coefficients[-2::-1]:
        acc *= x
        acc += c
        acc %= _P
    return acc


def _check_xs(xs: np.ndarray) -> None:
    if xs.size and (xs.min() < 1 or xs.max() >= PRIME):
        raise ShamirError(f"share x-coordinates must lie in [1, {PRIME - 1}]")
    if np.unique(xs).size != xs.size:
        raise ShamirError("share x-coordinates must be distinct")


def split(
    secrets: Sequence[bytes], xs: Sequence[int], threshold: int, rng: RandomSource
) -> list[list[bytes]]:
    """Share each secret t-of-len(xs). ``result[i][j]`` is holder ``xs[i]``'s share of secret j.

    Coefficient j of every chunk's polynomial is drawn in one call, constant terms first, so the
    shares for given ``rng`` bytes are fixed by the spec (protocol_spec/vectors/shamir.json).
    """
    xs_arr = np.asarray(xs, dtype=np.int64)
    _check_xs(xs_arr)
    if not 1 <= threshold <= len(xs_arr):
        raise ShamirError(f"threshold {threshold} must lie in [1, {len(xs_arr)}] (the holders)")
    m = len(secrets)
    constant = secrets_to_chunks(secrets).reshape(1, m * CHUNKS)
    random_terms = random_field_elements((threshold - 1) * m * CHUNKS, rng)
    coefficients = np.concatenate((constant.ravel(), random_terms)).reshape(threshold, m * CHUNKS)
    shares = evaluate(coefficients, xs_arr).astype("<u4").reshape(len(xs_arr), m, CHUNKS)
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
    """Recover one secret per share set, each from any ``threshold`` of its (x, share) pairs.

    Only the first ``threshold`` pairs of each set are used; the rest are validated, not checked
    against the polynomial. ``recover_many`` checks them.
    """
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
    return chunks_to_secrets(_interpolate_at_zero(xs, ys))


def _interpolate_at_zero(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(S, t) x-coordinates and (S, t, chunks) shares -> (S, chunks) uint64 constant terms."""
    threshold = xs.shape[1]
    GF = field(len(xs) * threshold * (2 * threshold + 4 * CHUNKS))
    X = GF(xs)
    # Lagrange basis at zero: lambda_i = prod_{j != i} x_j / (x_j - x_i).
    diff = X[:, None, :] - X[:, :, None]
    eye = np.eye(threshold, dtype=bool)
    diff[:, eye] = GF(1)
    numerators = np.multiply.reduce(X, axis=1)[:, None] / X
    lagrange = numerators / np.multiply.reduce(diff, axis=2)
    secrets = np.add.reduce(lagrange[:, :, None] * GF(ys), axis=1)
    return np.asarray(secrets, dtype=np.uint64)


def _inverse_mod_p(a: np.ndarray) -> np.ndarray:
    """a^(p-2) mod p elementwise (Fermat), a in [1, p) as int64: products stay below 2^62."""
    result = np.ones_like(a)
    base = a % PRIME
    e = PRIME - 2
    while e:
        if e & 1:
            result = result * base % PRIME
        base = base * base % PRIME
        e >>= 1
    return result


def consistent(xs: np.ndarray, ys: np.ndarray, threshold: int) -> np.ndarray:
    """Whether each row's m shares lie on one polynomial of degree < t, exactly, in NumPy.

    ``xs``: (S, m) distinct x per row; ``ys``: (S, m, chunks) field elements, int64. The shares
    of one row fit iff they are orthogonal to the dual of the Reed-Solomon code at those x: the
    generalised Reed-Solomon code with column multipliers w_j = 1 / prod_{i != j} (x_j - x_i) and
    degree < m - t. That is, sum_j w_j x_j^r y_j = 0 for r = 0 .. m - t - 1 (the sum of
    w_j g(x_j) is the x^(m-1) coefficient of the interpolant of g, zero when deg g < m - 1).
    This costs m inversions per row instead of a Lagrange matrix per checked share, and the
    products run as int64 matrix products on 16-bit halves of y, exact below 2^53. Tested against
    galois's interpolation.
    """
    rows, m = xs.shape
    checks = m - threshold
    if checks <= 0:
        return np.ones(rows, dtype=bool)
    diff = (xs[:, :, None] - xs[:, None, :]) % PRIME  # diff[s, j, i] = x_j - x_i
    diff[:, np.arange(m), np.arange(m)] = 1
    denominators = np.ones((rows, m), dtype=np.int64)
    for i in range(m):
        denominators = denominators * diff[:, :, i] % PRIME
    w = _inverse_mod_p(denominators)
    parity = np.empty((rows, checks, m), dtype=np.int64)  # parity[s, r, j] = w_j x_j^r
    row = w
    for r in range(checks):
        parity[:, r, :] = row
        row = row * xs % PRIME
    low = np.matmul(parity, ys & 0xFFFF) % PRIME
    high = np.matmul(parity, ys >> 16) % PRIME
    syndrome = (low + high * 65536) % PRIME
    return ~np.any(syndrome, axis=(1, 2))


def reconstruct(shares: Sequence[tuple[int, bytes]], threshold: int) -> bytes:
    return reconstruct_many([shares], threshold)[0]


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome for one secret of ``recover_many``.

    ``secret``: the 32 bytes, or None when they cannot be determined. ``bad``: the x-coordinates of
    the shares that were malformed or do not lie on the secret's polynomial, ascending; when
    ``secret`` is None it holds the shares known to be bad (the malformed ones), and the others
    could not be told apart. ``reason``: why ``secret`` is None, in words; None otherwise.
    """

    secret: bytes | None
    bad: tuple[int, ...]
    reason: str | None


def _berlekamp_welch(GF, xs: np.ndarray, ys: np.ndarray, threshold: int):
    """The polynomial of degree < t within (m - t) // 2 errors of (xs, ys), or None.

    Solves Q(x_i) = y_i E(x_i) for Q of degree < e + t and monic E of degree e = (m - t) // 2;
    any solution has Q = P E for the unique such P (Berlekamp and Welch, US 4,633,470; e.g.
    Guruswami's lecture notes on Reed-Solomon decoding).
    """
    import galois

    m = len(xs)
    e = (m - threshold) // 2
    X = GF(xs)
    Y = GF(ys)
    powers = X[:, None] ** np.arange(e + threshold + 1)
    system = np.concatenate(
        (powers[:, : e + threshold], -(Y[:, None] * powers[:, :e]), (Y * powers[:, e])[:, None]), axis=1
    )
    reduced = system.row_reduce()
    unknowns = 2 * e + threshold
    solution = GF.Zeros(unknowns)
    for row in reduced:
        nonzero = np.flatnonzero(row[:unknowns])
        if nonzero.size == 0:
            if row[unknowns] != 0:
                return None  # inconsistent: more than e errors
            continue
        solution[nonzero[0]] = row[unknowns]  # free unknowns are 0; pivots are 1 after reduction
    q = galois.Poly(solution[: e + threshold][::-1], field=GF)
    err = galois.Poly(np.concatenate((GF([1]), solution[e + threshold :][::-1])), field=GF)
    p, remainder = divmod(q, err)
    if remainder != 0:
        return None
    return p


def _recover_one(GF, xs: np.ndarray, ys: np.ndarray, threshold: int, malformed: list[int]) -> Recovery:
    """Robust decoding of one secret whose well-formed shares do not all fit one polynomial."""
    m = len(xs)
    if (m - threshold) // 2 == 0:
        return Recovery(
            None,
            tuple(sorted(malformed)),
            f"the {m} well-formed shares do not lie on one polynomial of degree {threshold - 1}, "
            f"and at least {threshold + 2} are needed to find which are bad",
        )
    off = np.zeros(m, dtype=bool)
    chunks = np.zeros(CHUNKS, dtype=np.uint64)
    for c in range(CHUNKS):
        poly = _berlekamp_welch(GF, xs, ys[:, c], threshold)
        if poly is None:
            off = None
            break
        off |= np.asarray(poly(GF(xs)), dtype=np.int64) != ys[:, c]
        chunks[c] = int(poly(GF(0)))
    limit = (m - threshold) // 2
    if off is None or int(off.sum()) > limit:
        return Recovery(
            None,
            tuple(sorted(malformed)),
            f"more than {limit} of the {m} well-formed shares are off the polynomial "
            f"(degree {threshold - 1}); the secret cannot be determined",
        )
    bad = tuple(sorted(malformed + [int(x) for x in xs[off]]))
    if not _valid_chunks(chunks[None, :])[0]:
        return Recovery(None, bad, "the consistent shares do not encode a 32-byte secret")
    return Recovery(chunks_to_secrets(chunks[None, :])[0], bad, None)


def recover_many(
    share_sets: Sequence[Sequence[tuple[int, bytes]] | Mapping[int, bytes]], threshold: int
) -> list[Recovery]:
    """Recover one secret per share set, checking every share and naming the bad ones.

    A share set is a sequence of (x, share) pairs or a mapping x -> share. A share of the wrong
    length, or holding a value outside the field, is bad. With m well-formed shares, up to
    (m - t) // 2 altered ones are found and the exact secret returned; with more, the result is
    either that or ``secret=None`` with a reason -- unless the altered shares were made to agree on
    another polynomial, which no decoder can tell from the truth. With m == t nothing can be
    checked and ``bad`` is only the malformed shares: the caller must rely on a commitment.

    Caller errors raise ``ShamirError``: threshold below 1, an x outside [1, p - 1], or an x that
    repeats within a set.
    """
    if threshold < 1:
        raise ShamirError(f"threshold must be at least 1, got {threshold}")
    results: list[Recovery | None] = [None] * len(share_sets)
    # Group the sets by how many well-formed shares they hold: one batched pass checks a group,
    # whatever its holders (in SecAgg+ every client's neighbours differ).
    groups: dict[int, list[tuple[int, np.ndarray, np.ndarray, list[int]]]] = {}
    for i, shares in enumerate(share_sets):
        pairs = list(shares.items()) if isinstance(shares, Mapping) else list(shares)
        # Per set only C-level work on its (x, share) columns: a round recovers n secrets.
        set_xs, payloads = zip(*pairs) if pairs else ((), ())
        xs = np.fromiter(set_xs, dtype=np.int64, count=len(pairs))
        if pairs and (min(set_xs) < 1 or max(set_xs) >= PRIME or len(set(set_xs)) != len(set_xs)):
            _check_xs(xs)  # raises, saying which rule the x-coordinates break
        if len(pairs) >= threshold and set(map(len, payloads)) == {SHARE_BYTES}:
            values = np.frombuffer(b"".join(payloads), dtype="<u4").reshape(len(pairs), CHUNKS)
            if values.max(initial=0) < PRIME:  # the common case: every share well-formed
                groups.setdefault(len(pairs), []).append((i, xs, values.astype(np.int64), []))
                continue
        malformed = [x for x, share in pairs if len(share) != SHARE_BYTES]
        good = [(x, share) for x, share in pairs if len(share) == SHARE_BYTES]
        values = np.frombuffer(b"".join(s for _, s in good), dtype="<u4").reshape(len(good), CHUNKS)
        in_field = ~np.any(values >= PRIME, axis=1)
        malformed += [x for (x, _), ok in zip(good, in_field) if not ok]
        good_xs = np.array([x for (x, _), ok in zip(good, in_field) if ok], dtype=np.int64)
        if len(good_xs) < threshold:
            results[i] = Recovery(
                None,
                tuple(sorted(malformed)),
                f"{len(good_xs)} well-formed shares received, threshold is {threshold}",
            )
            continue
        groups.setdefault(len(good_xs), []).append((i, good_xs, values[in_field].astype(np.int64), malformed))

    # A batch's field work holds (secrets, m, m) and (secrets, t, t) arrays: batches of at most
    # RECOVER_BATCH secrets keep that O(batch * k^2) instead of O(n * k^2) (n = 100,000 at k = 46
    # would be gigabytes), at the same speed.
    batches = ((m, group[i:i + RECOVER_BATCH]) for m, group in groups.items()
               for i in range(0, len(group), RECOVER_BATCH))
    for m, members in batches:
        xs = np.stack([x for _, x, _, _ in members])  # (secrets, m)
        ys = np.stack([v for _, _, v, _ in members])  # (secrets, m, chunks)
        fits = consistent(xs, ys, threshold)
        chunks = np.zeros((len(members), CHUNKS), dtype=np.uint64)
        if fits.any():
            chunks[fits] = _interpolate_at_zero(xs[fits, :threshold], ys[fits, :threshold])
        valid = _valid_chunks(chunks)
        good = fits & valid
        secrets = iter(chunks_to_secrets(chunks[good]) if good.any() else ())
        for k, (i, set_xs, values, malformed) in enumerate(members):
            if not fits[k]:
                GF = field(threshold * (2 * threshold + 4 * CHUNKS))
                results[i] = _recover_one(GF, set_xs, values, threshold, malformed)
            elif not valid[k]:
                results[i] = Recovery(
                    None, tuple(sorted(malformed)), "the shares do not encode a 32-byte secret"
                )
            else:
                results[i] = Recovery(next(secrets), tuple(sorted(malformed)), None)
    return results  # type: ignore[return-value]
