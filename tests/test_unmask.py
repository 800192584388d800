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
    DroppedKey,
    Masks,
    ProcessUnmasker,
    SerialUnmasker,
    ThreadUnmasker,
    make_unmasker,
    pack_masks,
    shard_bounds,
    split_dropped,
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


# The pool's two ways of splitting the work, forced through its thresholds.
SPLITS = {"masks": dict(SPLIT_BY_MASKS_BYTES=1 << 62), "shards": dict(SPLIT_BY_MASKS_BYTES=0)}


def force_split(monkeypatch, split: str) -> None:
    for name, value in SPLITS[split].items():
        monkeypatch.setattr(unmask, name, value)


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("bits", [32, 20, 64])
def test_every_unmasker_matches_the_serial_loop(bits, split, process_unmasker, monkeypatch):
    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)  # shard even this small case
    force_split(monkeypatch, split)
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


def _dropped_masks(owners: int, peers: int) -> Masks:
    """``owners`` dropped clients with real X25519 keys, each with ``peers`` surviving neighbours."""
    from secagg.crypto import kex

    gen = np.random.default_rng(7)
    adverts = {c: (kex.public_key(gen.bytes(32)), kex.public_key(gen.bytes(32))) for c in range(owners + peers)}
    dropped = tuple(
        DroppedKey(u, gen.bytes(32), adverts[u], tuple((v, *adverts[v]) for v in range(owners, owners + peers)))
        for u in range(owners))
    return Masks(bytes(range(32)), ready=[(gen.bytes(32), -1) for _ in range(5)], dropped=dropped)


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_the_pool_derives_the_dropped_pairs_seeds_as_the_server_would(split, process_unmasker, monkeypatch):
    """Split over the workers (a client's pairs may straddle two), the derived masks are the ones
    iterating the Masks derives in order, and the unmasked sums agree."""
    from secagg.protocol import keys

    monkeypatch.setattr(unmask, "MIN_PARALLEL_PAIRS", 0)
    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)
    force_split(monkeypatch, split)
    masks = _dropped_masks(owners=5, peers=7)
    serial = list(masks)
    assert len(serial) == len(masks) == 5 + 35
    u, (v, c_v, s_v) = masks.dropped[0].owner, masks.dropped[0].peers[0]
    pair = keys.pair_session(masks.session, u, masks.dropped[0].keys, v, (c_v, s_v))
    assert serial[5] == (keys.pairwise_mask_seed(masks.dropped[0].private_key, s_v, session=pair, a=u, b=v),
                         -keys.mask_sign(v, u))
    assert process_unmasker._derive(masks) == serial
    base = np.arange(50_000, dtype=np.uint32)
    expected, got = base.copy(), base.copy()
    SerialUnmasker()(expected, masks, 32)
    assert process_unmasker(got, masks, 32) == 40
    assert np.array_equal(got, expected)


@pytest.mark.parametrize(("d", "count", "pairs", "split"), [
    (1_000, 4_000, 0, "serial"),  # 4 M mask-words: below MIN_PARALLEL_WORK
    (1_000, 100, 127, "serial"),  # 127 dropped pairs: derived in the server
    (1_000, 100, 128, "masks"),  # little expansion, but 128 dropped pairs to derive
    (2_000, 4_000, 0, "masks"),  # many short masks: each set up once, in one worker
    (100_000, 100, 0, "masks"),  # 400 KB of sum
    (300_000, 100, 0, "shards"),  # 1.2 MB: above SPLIT_BY_MASKS_BYTES
])
def test_the_pool_splits_small_sums_by_mask_and_large_ones_by_coordinate(d, count, pairs, split, monkeypatch):
    """The choice the thresholds make (checked with ``bench.unmask --sweep``), seen without a pool."""
    pool = ProcessUnmasker(2)
    chosen = []
    monkeypatch.setattr(pool, "_start", lambda: None)
    monkeypatch.setattr(pool, "_by_masks", lambda *a: chosen.append("masks"))
    monkeypatch.setattr(pool, "_by_shards", lambda *a: chosen.append("shards"))
    monkeypatch.setattr(pool, "_derive", list)
    monkeypatch.setattr(unmask, "apply_range", lambda *a: chosen.append("serial"))
    dropped = (DroppedKey(1, bytes(32), (bytes(32), bytes(32)), ((2, bytes(32), bytes(32)),) * pairs),)
    pool(np.zeros(d, dtype=np.uint32), Masks(b"", ready=[(bytes(32), 1)] * count, dropped=dropped[:bool(pairs)]), 32)
    assert chosen == [split]


def test_servers_in_several_threads_share_one_pool(process_unmasker, monkeypatch):
    """The default pool serves every server of a process: calls from several threads take turns,
    and each gets its own sum (never another caller's reply)."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)
    cases = []
    for i in range(6):
        gen = np.random.default_rng(100 + i)
        base = gen.integers(0, 2**32, 3000 + 500 * i, dtype=np.uint64).astype(np.uint32)
        masks = [(gen.bytes(32), 1 if j % 2 else -1) for j in range(3 + i)]
        expected = base.copy()
        SerialUnmasker()(expected, masks, 32)
        cases.append((base, masks, expected))

    def run(case):
        base, masks, expected = case
        got = base.copy()
        process_unmasker(got, masks, 32)
        return np.array_equal(got, expected)

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(run, cases * 3))


def test_split_dropped_balances_pairs_and_keeps_their_order():
    masks = _dropped_masks(owners=3, peers=5)
    groups = split_dropped(masks.dropped, 2)
    assert [sum(len(d.peers) for d in g) for g in groups] == [8, 7]
    assert [(d.owner, p[0]) for g in groups for d in g for p in d.peers] == \
        [(d.owner, p[0]) for d in masks.dropped for p in d.peers]
    assert split_dropped((), 4) == []
    assert DroppedKey.from_wire(masks.dropped[0].wire()) == masks.dropped[0]


def test_a_script_without_a_main_guard_can_use_both_pools(tmp_path):
    """Workers are fresh interpreters that never import the program's main module, so a script
    with no ``if __name__ == "__main__":`` runs once and its pools work."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from secagg import simulate\n"
        "from secagg.protocol import unmask\n"
        "unmask.MIN_PARALLEL_WORK = unmask.MIN_PARALLEL_PAIRS = 0\n"
        "u = unmask.ProcessUnmasker(2)\n"
        "r = simulate(24, 64, dropout=0.2, seed=3, unmasker=u, client_workers=2)\n"
        "print('RAN', r.exact, len(u.pids))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["RAN", "True", "2"]


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
    u = ProcessUnmasker(2)
    try:
        u.start()  # spawns without waiting; the first call then finds them running
        started = set(u.pids)
        assert len(started) == 2
        base = np.arange(4096, dtype=np.uint32)
        expected = base.copy()
        SerialUnmasker()(expected, [(bytes(32), -1)], 32)
        u(base, [(bytes(32), -1)], 32)
        assert np.array_equal(base, expected) and set(u.pids) == started
    finally:
        u.close()


def test_a_failing_or_vanished_unmasking_worker_is_a_typed_error(monkeypatch):
    from secagg.errors import WorkerFailed

    monkeypatch.setattr(unmask, "MIN_PARALLEL_WORK", 0)
    u = ProcessUnmasker(2)
    try:
        u.warm()
        with pytest.raises(WorkerFailed, match=r"unmasking worker \d failed"):
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


def test_a_round_big_enough_for_the_pool_starts_it_with_the_round():
    """Server.start spawns the pool's workers (without waiting) when the round's clients times
    its dimension reach MIN_PARALLEL_WORK, so they import while the clients work; a smaller
    round starts nothing."""
    from secagg.protocol.server import Server
    from tests.harness import make_config

    for clients, dim, started in ((10, 1000, 0), (10, -(-unmask.MIN_PARALLEL_WORK // 10), 2)):
        u = ProcessUnmasker(2)
        try:
            Server(make_config(clients, dim, label="pool-start"), unmasker=u).start()
            assert len(u.pids) == started
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
        unmasker.warm()
        got = base.copy()
        assert unmasker(got, masks, 32) == 5
        assert np.array_equal(got, expected)
        # Dropped pairs' seeds derived as Ray tasks (the threshold lowered so a few pairs do).
        dropped = _dropped_masks(owners=3, peers=4)
        expected, got = base.copy(), base.copy()
        SerialUnmasker()(expected, dropped, 32)
        unmask.MIN_PARALLEL_PAIRS, saved = 0, unmask.MIN_PARALLEL_PAIRS
        try:
            assert unmasker(got, dropped, 32) == 5 + 12
        finally:
            unmask.MIN_PARALLEL_PAIRS = saved
        assert np.array_equal(got, expected)
    finally:
        ray.shutdown()
