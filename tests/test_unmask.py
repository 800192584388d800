"""Sharded unmasking: every unmasker removes exactly the masks the serial loop removes, and a
whole round through each of them is exact."""

from __future__ import annotations

import os

import numpy as np
import pytest

from secagg.crypto import prg
from secagg.errors import ConfigurationError
from secagg.protocol import unmask
from secagg.protocol.unmask import (
    ProcessUnmasker,
    SerialUnmasker,
    ThreadUnmasker,
    make_unmasker,
    pack_masks,
    shard_bounds,
    unpack_masks,
)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("start", [0, 4, 8, 1000])
def test_a_mask_range_is_that_range_of_the_mask(dtype, start):
    seed = bytes(range(32))
    per_block = 16 // np.dtype(dtype).itemsize
    start = start - start % per_block
    full = prg.expand(seed, 2051, dtype)
    part = prg.expand_range_into(seed, start, np.empty(2051 - start, dtype=dtype))
    assert np.array_equal(part, full[start:])
    with pytest.raises(ValueError, match="block"):
        prg.expand_range_into(seed, per_block + 1, np.empty(8, dtype=dtype))


@pytest.mark.parametrize("dim, shards", [(1, 4), (7, 2), (1000, 3), (10**6 + 3, 8), (16, 16)])
def test_shards_cover_the_vector_on_block_boundaries(dim, shards):
    for dtype in (np.uint32, np.uint64):
        bounds = shard_bounds(dim, dtype, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == dim
        assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))
        assert all((a * np.dtype(dtype).itemsize) % 16 == 0 for a, _ in bounds)
        assert len(bounds) <= shards


def test_masks_blob_round_trip():
    masks = [(os.urandom(32), 1), (os.urandom(32), -1)]
    assert unpack_masks(pack_masks(masks)) == masks


@pytest.fixture(scope="module")
def process_unmasker():
    u = ProcessUnmasker(2)
    yield u
    u.close()


@pytest.mark.parametrize("bits", [32, 20, 64])
def test_every_unmasker_matches_the_serial_loop(bits, process_unmasker, monkeypatch):
    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)  # shard even this small case
    dtype = np.uint64 if bits > 32 else np.uint32
    gen = np.random.default_rng(bits)
    base = gen.integers(0, 2**bits - 1, 100_003, dtype=np.uint64).astype(dtype)
    masks = [(gen.bytes(32), 1 if i % 3 else -1) for i in range(9)]
    expected = base.copy()
    SerialUnmasker()(expected, masks, bits)
    for unmasker in (ThreadUnmasker(3), process_unmasker):
        got = base.copy()
        assert unmasker(got, masks, bits) == len(masks)
        assert np.array_equal(got, expected), type(unmasker).__name__


def test_warm_starts_every_pool_worker_before_the_first_round(monkeypatch):
    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)
    u = ProcessUnmasker(2)
    try:
        u.warm()
        started = set(u.pids)
        assert len(started) == 2 and os.getpid() not in started
        base = np.arange(4096, dtype=np.uint32)
        expected = base.copy()
        masks = [(bytes(32), 1)]
        SerialUnmasker()(expected, masks, 32)
        u(base, masks, 32)
        assert np.array_equal(base, expected) and set(u.pids) == started  # no new process
    finally:
        u.close()
    SerialUnmasker().warm()
    ThreadUnmasker(2).warm()  # nothing to start


def test_a_failing_or_vanished_unmasking_worker_is_a_typed_error(monkeypatch):
    from secagg.errors import WorkerFailed

    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)
    u = ProcessUnmasker(2)
    try:
        u.warm()
        with pytest.raises(WorkerFailed, match="unmasking worker 0 failed"):
            u(np.zeros(4096, dtype=np.uint32), [(bytes(31), 1)], 32)  # a 31-byte seed: the worker's error
        u.close()
        u.warm()
        u._procs[1].kill()
        u._procs[1].join()
        with pytest.raises(WorkerFailed, match="unmasking worker 1 ended unexpectedly"):
            u(np.zeros(4096, dtype=np.uint32), [(bytes(32), 1)], 32)
        assert u.pids == []  # a broken pool is closed; the next round starts a new one
        got = np.zeros(4096, dtype=np.uint32)
        u(got, [(bytes(32), 1)], 32)
        assert np.array_equal(got, prg.expand(bytes(32), 4096, np.uint32))
    finally:
        u.close()


def test_a_round_is_exact_with_a_sharded_server(monkeypatch):
    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)
    from tests.harness import Harness, make_config

    config = make_config(30, 5000, bits=24, label="shard")
    serial = Harness(config, label="h", schedule={3: 2, 9: 3}, unmasker=SerialUnmasker())
    serial.run()
    sharded = Harness(config, label="h", schedule={3: 2, 9: 3}, unmasker=ThreadUnmasker(4))
    sharded.run()
    a, b = serial.server.result(), sharded.server.result()
    assert np.array_equal(a.ring_sum, b.ring_sum) and a.contributors == b.contributors


def test_workers_must_be_positive():
    with pytest.raises(ConfigurationError):
        ThreadUnmasker(0)
    with pytest.raises(ConfigurationError):
        make_unmasker(kind="gpu")


def test_ray_tasks_unmask_like_the_serial_loop():
    ray = pytest.importorskip("ray")
    gen = np.random.default_rng(5)
    base = gen.integers(0, 2**32 - 1, 50_001, dtype=np.uint64).astype(np.uint32)
    masks = [(gen.bytes(32), 1 if i % 2 else -1) for i in range(5)]
    expected = base.copy()
    SerialUnmasker()(expected, masks, 32)
    try:
        unmasker = make_unmasker(3, ray_address=None, kind="ray", num_cpus=2, include_dashboard=False,
                                 log_to_driver=False)
        got = base.copy()
        assert unmasker(got, masks, 32) == 5
        assert np.array_equal(got, expected)
    finally:
        ray.shutdown()
