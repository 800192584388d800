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
