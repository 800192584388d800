"""Shamir t-of-k over GF(2^31 + 11): vectors, any-t reconstruction, and every refusal."""

import itertools
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.crypto import shamir
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import ShamirError

from conftest import load_vectors


def test_vectors_split_and_any_three_reconstruct():
    v = load_vectors("shamir.json")
    assert v["prime"] == shamir.PRIME
    secrets = [bytes.fromhex(s) for s in v["secrets"]]
    shares = shamir.split(secrets, v["xs"], v["threshold"], DeterministicRandom("shamir coefficients"))
    assert [[s.hex() for s in holder] for holder in shares] == v["shares"]
    for subset in itertools.combinations(range(len(v["xs"])), v["threshold"]):
        for j, secret in enumerate(secrets):
            pairs = [(v["xs"][i], bytes.fromhex(v["shares"][i][j])) for i in subset]
            assert shamir.reconstruct(pairs, v["threshold"]) == secret


@given(
    threshold=st.integers(1, 12),
    extra=st.integers(0, 10),
    data=st.data(),
)
def test_any_t_distinct_shares_reconstruct(threshold, extra, data):
    holders = data.draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=threshold + extra,
                                 max_size=threshold + extra, unique=True))
    secrets = [os.urandom(32) for _ in range(3)]
    shares = shamir.split(secrets, holders, threshold, os.urandom)
    chosen = data.draw(st.permutations(range(len(holders))))[:threshold]
    for j, secret in enumerate(secrets):
        assert shamir.reconstruct([(holders[i], shares[i][j]) for i in chosen], threshold) == secret


def test_fewer_than_t_shares_reveal_nothing_and_are_refused():
    secret = os.urandom(32)
    shares = shamir.split([secret], [1, 2, 3, 4], 3, os.urandom)
    with pytest.raises(ShamirError, match="2 shares received, threshold is 3"):
        shamir.reconstruct([(1, shares[0][0]), (2, shares[1][0])], 3)
    # Interpolating t - 1 shares as if the threshold were t - 1 does not give the secret.
    try:
        assert shamir.reconstruct([(1, shares[0][0]), (2, shares[1][0])], 2) != secret
    except ShamirError:
        pass  # or it is not even a valid secret


def test_batched_reconstruction_matches_single():
    rng = DeterministicRandom("batch")
    secrets = [rng(32) for _ in range(50)]
    xs = list(range(1, 21))
    per_secret = [shamir.split([s], xs, 7, rng) for s in secrets]
    sets = [[(x, per_secret[i][k][0]) for k, x in enumerate(xs)][i % 10 : i % 10 + 9] for i in range(50)]
    assert shamir.reconstruct_many(sets, 7) == secrets
    assert [shamir.reconstruct(s, 7) for s in sets] == secrets


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([(1, b"a" * 36), (1, b"b" * 36)], "distinct"),
        ([(0, b"a" * 36), (1, b"b" * 36)], r"\[1, "),
        ([(shamir.PRIME, b"a" * 36), (1, b"b" * 36)], r"\[1, "),
        ([(1, b"a" * 35), (2, b"b" * 36)], "36 bytes"),
        ([(1, b"\xff" * 36), (2, b"b" * 36)], "outside the field"),
    ],
)
def test_bad_shares_are_refused(pairs, message):
    with pytest.raises(ShamirError, match=message):
        shamir.reconstruct(pairs, 2)


def test_split_refuses_bad_arguments():
    with pytest.raises(ShamirError, match="threshold"):
        shamir.split([bytes(32)], [1, 2], 3, os.urandom)
    with pytest.raises(ShamirError, match="distinct"):
        shamir.split([bytes(32)], [1, 1], 2, os.urandom)
    with pytest.raises(ShamirError, match="32 bytes"):
        shamir.split([bytes(31)], [1, 2], 2, os.urandom)


def test_inconsistent_shares_do_not_silently_yield_a_secret():
    # Shares of different secrets, combined, interpolate to some field value; where that value
    # is not a 256-bit secret the reconstruction refuses rather than truncating.
    # (A random field value is a valid 256-bit chunking with probability about 2^-31.)
    a = shamir.split([b"\xff" * 32], [1, 2], 2, DeterministicRandom("a"))
    b = shamir.split([b"\xff" * 32], [1, 2], 2, DeterministicRandom("b"))
    with pytest.raises(ShamirError, match="inconsistent"):
        shamir.reconstruct([(1, a[0][0]), (2, b[1][0])], 2)


def test_chunk_round_trip_extremes():
    for secret in (bytes(32), b"\xff" * 32, bytes(range(32))):
        chunks = shamir.secrets_to_chunks([secret])
        assert chunks.shape == (1, shamir.CHUNKS)
        assert int(chunks.max()) < 2**31
        assert shamir.chunks_to_secrets(chunks) == [secret]


def test_coefficients_are_uniform_field_elements():
    values = shamir.random_field_elements(20000, DeterministicRandom("uniform"))
    assert values.max() < shamir.PRIME
    assert abs(values.mean() / shamir.PRIME - 0.5) < 0.01
    assert np.unique(values).size > 19990


# --- The client's split runs in NumPy; galois is the reference it must match. ---


def test_field_facts_behind_verify_false():
    import galois

    assert galois.is_prime(shamir.PRIME)
    assert galois.primitive_root(shamir.PRIME) == shamir.PRIMITIVE_ELEMENT  # the smallest
    primes, _ = galois.factors(shamir.PRIME - 1)
    assert primes == [2, 3, 149, 2402107]
    assert all(pow(2, (shamir.PRIME - 1) // q, shamir.PRIME) != 1 for q in primes)
    assert shamir.field().primitive_element == shamir.PRIMITIVE_ELEMENT


@given(
    threshold=st.integers(1, 20),
    columns=st.integers(1, 30),
    data=st.data(),
)
def test_numpy_evaluation_matches_galois(threshold, columns, data):
    GF = shamir.field()
    holders = data.draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=1, max_size=12, unique=True))
    extremes = st.sampled_from([0, 1, shamir.PRIME - 1, shamir.PRIME - 2])
    values = data.draw(
        st.lists(st.one_of(st.integers(0, shamir.PRIME - 1), extremes),
                 min_size=threshold * columns, max_size=threshold * columns)
    )
    coefficients = np.array(values, dtype=np.uint64).reshape(threshold, columns)
    expected = GF(np.array(holders) % shamir.PRIME)[:, None] ** np.arange(threshold) @ GF(coefficients)
    assert np.array_equal(shamir.evaluate(coefficients, holders), np.asarray(expected, dtype=np.uint64))


def _galois_split(secrets, xs, threshold, rng):
    """The split as it was written with galois (commit 5a328ce), kept as the reference."""
    GF = shamir.field()
    m = len(secrets)
    constant = shamir.secrets_to_chunks(secrets).reshape(1, m * shamir.CHUNKS)
    random_terms = shamir.random_field_elements((threshold - 1) * m * shamir.CHUNKS, rng)
    coefficients = GF(np.concatenate((constant.ravel(), random_terms)).reshape(threshold, m * shamir.CHUNKS))
    vandermonde = GF(np.asarray(xs) % shamir.PRIME)[:, None] ** np.arange(threshold)
    shares = np.asarray(vandermonde @ coefficients, dtype="<u4").reshape(len(xs), m, shamir.CHUNKS)
    return [[row.tobytes() for row in holder] for holder in shares]


@given(threshold=st.integers(1, 15), extra=st.integers(0, 10), count=st.integers(1, 4), data=st.data())
def test_split_is_byte_identical_to_galois(threshold, extra, count, data):
    holders = data.draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=threshold + extra,
                                 max_size=threshold + extra, unique=True))
    label = data.draw(st.binary(max_size=8))
    secrets = [DeterministicRandom(label + b"secret")(32) for _ in range(count)]
    assert shamir.split(secrets, holders, threshold, DeterministicRandom(label)) == _galois_split(
        secrets, holders, threshold, DeterministicRandom(label)
    )


# --- recover_many: check every share, name the bad ones, never a wrong secret. ---


def _alter(share: bytes, how: int, data) -> bytes:
    # The new values come from the OS, not from hypothesis: hypothesis shrinks towards equal
    # values, i.e. towards altered shares that agree on another polynomial, which beyond the
    # decoding radius no decoder can tell from the truth (test_coordinated_majority_...).
    if how == 0:  # one chunk moved to another field element
        chunk = data.draw(st.integers(0, shamir.CHUNKS - 1))
        delta = 1 + int.from_bytes(os.urandom(8), "little") % (shamir.PRIME - 1)
        values = np.frombuffer(share, dtype="<u4").astype(np.int64)
        values[chunk] = (values[chunk] + delta) % shamir.PRIME
        return values.astype("<u4").tobytes()
    if how == 1:  # random bytes (often outside the field)
        return os.urandom(36)
    return data.draw(st.binary(max_size=40).filter(lambda b: len(b) != 36))  # wrong length


@given(threshold=st.integers(1, 8), extra=st.integers(0, 9), data=st.data())
def test_recover_many_finds_altered_shares_or_refuses(threshold, extra, data):
    m = threshold + extra
    holders = data.draw(st.lists(st.integers(1, 10**6), min_size=m, max_size=m, unique=True))
    secrets = [os.urandom(32) for _ in range(3)]
    shares = shamir.split(secrets, holders, threshold, os.urandom)
    sets, altered, malformed = [], [], []
    for j in range(len(secrets)):
        which = data.draw(st.sets(st.integers(0, m - 1), max_size=m))
        pairs = []
        for i, x in enumerate(holders):
            share = shares[i][j]
            if i in which:
                share = _alter(share, data.draw(st.integers(0, 2)), data)
            pairs.append((x, share))
        sets.append(pairs if j % 2 else dict(pairs))
        altered.append(tuple(sorted(holders[i] for i in which)))
        malformed.append(tuple(sorted(x for x, s in pairs if len(s) != 36 or max(np.frombuffer(s, "<u4")) >= shamir.PRIME)))
    for j, result in enumerate(shamir.recover_many(sets, threshold)):
        well_formed = m - len(malformed[j])
        if len(altered[j]) <= (m - threshold) // 2:
            assert result == shamir.Recovery(secrets[j], altered[j], None)
        elif well_formed == threshold:
            # Nothing left to check against: only the malformed shares are seen (documented).
            assert result.bad == malformed[j]
        elif well_formed < threshold:
            assert result.secret is None and result.bad == malformed[j]
        elif result.secret is not None:
            assert result.secret == secrets[j] and result.bad == altered[j] and result.reason is None
        else:
            assert result.reason and set(malformed[j]) <= set(result.bad) <= set(altered[j])


def _share_sets(label: str, count: int, holders: int, threshold: int):
    """``count`` secrets, each split t-of-``holders``; one share set of (x, share) per secret."""
    rng = DeterministicRandom(label)
    secrets = [rng(32) for _ in range(count)]
    xs = list(range(1, holders + 1))
    shares = shamir.split(secrets, xs, threshold, rng)
    return secrets, shares, [[(x, shares[i][j]) for i, x in enumerate(xs)] for j in range(count)]


def test_recover_many_batches_sets_with_the_same_holders():
    secrets, _, sets = _share_sets("recover batch", 40, 12, 5)
    sets[7][3] = (4, bytes(36))
    results = shamir.recover_many(sets, 5)
    assert [r.secret for r in results] == secrets
    assert [r.bad for r in results] == [(4,) if j == 7 else () for j in range(40)]
    assert shamir.reconstruct_many([s[-5:] for s in sets], 5) == secrets


def test_recover_many_refusals_say_why():
    secret = os.urandom(32)
    shares = shamir.split([secret], [1, 2, 3, 4], 3, os.urandom)
    pairs = [(i + 1, shares[i][0]) for i in range(4)]
    short = shamir.recover_many([pairs[:2] + [(3, b"short")]], 3)[0]
    assert short.secret is None and short.bad == (3,) and "2 well-formed shares" in short.reason
    one_off = shamir.recover_many([pairs[:3] + [(4, bytes(36))]], 3)[0]
    assert one_off.secret is None and "at least 5 are needed" in one_off.reason
    with pytest.raises(ShamirError, match="distinct"):
        shamir.recover_many([[pairs[0], pairs[0]]], 1)
    with pytest.raises(ShamirError, match="threshold"):
        shamir.recover_many([pairs], 0)


def test_coordinated_majority_is_undetectable_by_design():
    # More than (m - t) // 2 altered shares that agree on another polynomial outvote the honest
    # ones: the documented limit a commitment must cover.
    honest = shamir.split([bytes(32)], list(range(1, 8)), 2, os.urandom)
    forged = shamir.split([b"\x01" * 32], list(range(1, 8)), 2, os.urandom)
    pairs = [(x, (honest if x <= 2 else forged)[x - 1][0]) for x in range(1, 8)]
    result = shamir.recover_many([pairs], 2)[0]
    assert result.secret == b"\x01" * 32 and result.bad == (1, 2)


def test_recover_many_agrees_in_both_galois_modes(monkeypatch):
    secrets, shares, sets = _share_sets("modes", 5, 9, 3)
    sets[2][0] = (1, bytes(36))
    sets[4][8] = (9, shares[8][0])
    small = shamir.recover_many(sets, 3)
    assert shamir.field().ufunc_mode == "python-calculate"
    monkeypatch.setattr(shamir, "_jit_compiled", False)  # restored after the test: later tests
    monkeypatch.setattr(shamir, "JIT_WORK", 0)  # keep the pure-Python path
    big = shamir.recover_many(sets, 3)
    assert shamir.field().ufunc_mode == "jit-calculate"
    assert shamir.reconstruct_many([s[3:6] for s in sets], 3) == secrets
    assert small == big
    assert [r.bad for r in big] == [(), (), (1,), (), (9,)]


def test_the_numpy_consistency_check_agrees_with_galois_interpolation():
    """shamir.consistent (the dual-code syndrome in NumPy) against galois: interpolate from the
    first t shares, evaluate at the others, compare."""
    import galois

    GF = galois.GF(shamir.PRIME, primitive_element=2, verify=False)
    gen = np.random.default_rng(5)
    for threshold, m in ((1, 3), (2, 2), (3, 9), (7, 20), (19, 36)):
        secrets, shares, sets = _share_sets(f"dual {threshold} {m}", 12, m, threshold)
        xs = np.array([[x for x, _ in row] for row in sets], dtype=np.int64)
        ys = np.array([[np.frombuffer(s, "<u4") for _, s in row] for row in sets], dtype=np.int64)
        for row in range(0, 12, 2):  # alter every other set in one random chunk of one share
            j, c = gen.integers(m), gen.integers(shamir.CHUNKS)
            ys[row, j, c] = (ys[row, j, c] + gen.integers(1, shamir.PRIME)) % shamir.PRIME
        expected = []
        for row in range(12):
            fits = True
            for c in range(shamir.CHUNKS):
                poly = galois.lagrange_poly(GF(xs[row, :threshold]), GF(ys[row, :threshold, c]))
                fits &= bool(np.all(poly(GF(xs[row, threshold:])) == GF(ys[row, threshold:, c])))
            expected.append(fits)
        assert shamir.consistent(xs, ys, threshold).tolist() == expected
        assert expected == [m == threshold or row % 2 == 1 for row in range(12)]
