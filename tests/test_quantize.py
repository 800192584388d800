"""Fixed-point encoding: unbiased rounding, overflow-safe capacity, exact decoding, refusals."""

import numpy as np
import pytest

from secagg.config import RoundConfig
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import ConfigurationError, InvalidInput
from secagg.quantize import Quantizer, smallest_safe_bits


def test_capacity_refusal_names_the_smallest_safe_bits():
    q = Quantizer(bits=16, value_range=1.0, levels=1000)
    with pytest.raises(ConfigurationError, match=r"use bits >= 17") as info:
        q.check_capacity(100)  # 100 * 1000 = 100000 > 65535
    assert "100000" in str(info.value)
    assert smallest_safe_bits(100, 1000) == 17
    Quantizer(bits=17, value_range=1.0, levels=1000).check_capacity(100)


def test_ring_too_small_for_n_clients():
    with pytest.raises(ConfigurationError, match=r"use bits >= 11"):
        Quantizer.for_clients(1100, bits=10)
    with pytest.raises(ConfigurationError, match=r"use bits >= 11"):
        RoundConfig.create(1100, 10, bits=10, dropout_rate=0.05)


@pytest.mark.parametrize("bits", [1, 2, 7, 31, 32, 33, 52, 62])
def test_every_bit_width_encodes_within_capacity(bits):
    n = 3 if bits > 1 else 1
    q = Quantizer.for_clients(n, bits=bits, value_range=2.0)
    x = np.array([-2.0, 2.0, 0.0, 1.5, -0.3])
    enc = q.encode(x, dim=5, rng=DeterministicRandom(f"b{bits}"))
    assert enc.dtype == (np.uint32 if bits <= 32 else np.uint64)
    assert int(enc.max()) <= q.levels and n * q.levels <= 2**bits - 1
    assert int(enc[0]) == 0 and int(enc[1]) == q.levels  # the range ends are exact


@pytest.mark.parametrize("bits", [0, 63, 64, -1, 2.5])
def test_bit_width_outside_1_to_62_is_refused(bits):
    with pytest.raises(ConfigurationError, match=r"\[1, 62\]"):
        Quantizer.for_clients(3, bits=bits)


def test_stochastic_rounding_is_unbiased():
    q = Quantizer(bits=16, value_range=1.0, levels=10)
    x = np.full(200_000, 0.37)  # v = 6.85: rounds to 6 or 7
    enc = q.encode(x, dim=x.size, rng=DeterministicRandom("unbiased"))
    assert set(np.unique(enc).tolist()) == {6, 7}
    assert abs(enc.mean() - 6.85) < 0.005  # ~4.5 standard errors


def test_decode_of_a_sum_is_exact_up_to_rounding():
    n, d = 50, 1000
    q = Quantizer.for_clients(n, bits=24, value_range=3.0)
    gen = np.random.default_rng(0)
    xs = gen.uniform(-3, 3, (n, d))
    ring = sum(q.encode(x, dim=d, rng=DeterministicRandom(str(i))).astype(np.uint64) for i, x in enumerate(xs))
    assert int(ring.max()) <= n * q.levels < 2**24
    err = np.abs(q.decode(ring, n) - xs.sum(axis=0))
    assert err.max() < n * q.step


@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([0.1, np.nan, 0.2]), "non-finite"),
        (np.array([0.1, np.inf, 0.2]), "non-finite"),
        (np.array([0.1, 0.2]), r"shape \(3,\)"),
        (np.zeros((3, 1)), r"shape \(3,\)"),
        (np.array([0.1, 1.5, 0.2]), "outside the declared range"),
        (np.array([1 + 1j, 0, 0]), "dtype"),
        (np.array([True, False, True]), "dtype"),
        (np.array([1, 2, 3], dtype="timedelta64[s]"), "dtype"),  # NumPy counts it as an integer
        (np.array(["2026-01-01"] * 3, dtype="datetime64[D]"), "dtype"),
        ([0.1, 0.2, 0.3], "NumPy array"),
    ],
)
def test_bad_inputs_are_refused_not_clipped(x, message):
    q = Quantizer(bits=16, value_range=1.0, levels=100)
    with pytest.raises(InvalidInput, match=message):
        q.encode(x, dim=3, rng=DeterministicRandom("bad"))
