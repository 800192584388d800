"""Sharded unmasking: the server's last phase on 1 and 2 workers, against this machine's limit.

The work is a server's unmasking at d coordinates: E masks (one per survivor's self mask, one per
dropped client and surviving neighbour) expanded with AES-CTR and added to the sum. The limit is
E d 4 bytes at this machine's single-core AES-CTR throughput (measured in the same run) plus the
adds; speedup is serial time over sharded time, for threads and for the process pool.

    python3 -m bench.unmask [--dim 1000000] [--masks 200] [--runs 3]

writes bench/results/unmask.json and unmask.md.

    python3 -m bench.unmask --sweep [--runs 9]

times the pool's choices against each other around the thresholds that pick between them
(``secagg.protocol.unmask``), and what the thresholds as set pick: serial in the server, the
masks split over the workers, and coordinate shards, over d = 2^12 .. 2^20 (uint32 words; 30, 100
and 1,000 masks: ``MIN_PARALLEL_WORK``, ``SPLIT_BY_MASKS_BYTES``), and the dropped pairs' seeds
derived in the server or on the workers, for 32 .. 1,024 pairs at d = 1,000
(``MIN_PARALLEL_PAIRS``). Each choice is forced by setting the module's thresholds for the call;
the choices are interleaved in every repeat, and every result is checked against the
serial one. Writes bench/results/unmask_sweep.json and unmask_sweep.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np

from bench import median_seconds, write_results
from secagg.crypto import kex, prg
from secagg.protocol import unmask
from secagg.protocol.unmask import DroppedKey, Masks, ProcessUnmasker, SerialUnmasker, ThreadUnmasker


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10**6)
    parser.add_argument("--masks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--sweep", action="store_true", help="time the pool's choices around its thresholds")
    args = parser.parse_args(argv)
    if args.sweep:
        return sweep(args.runs, args.out)
    d, e = args.dim, args.masks
    gen = np.random.default_rng(0)
    masks = [(gen.bytes(32), 1 if i % 7 else -1) for i in range(e)]
    base = gen.integers(0, 2**32, d, dtype=np.uint64).astype(np.uint32)
    buffer = np.empty(d, dtype=np.uint32)

    def aes_only():
        for seed, _ in masks:
            prg.expand_into(seed, buffer)

    limit = median_seconds(aes_only, args.runs)
    expected = base.copy()
    SerialUnmasker()(expected, masks, 32)
    rows = [{"unmasker": "aes-ctr alone (1 core)", "workers": 1, "seconds": limit}]
    process = ProcessUnmasker(2)
    process.warm()  # the pool starts once, not per round
    for name, unmasker in (("serial", SerialUnmasker()), ("threads", ThreadUnmasker(2)), ("processes", process)):
        target = base.copy()
        unmasker(target, masks, 32)
        assert np.array_equal(target, expected), name
        seconds = median_seconds(lambda u=unmasker: u(base.copy(), masks, 32), args.runs)
        rows.append({"unmasker": name, "workers": getattr(unmasker, "workers", 1), "seconds": seconds})
    process.close()
    serial = rows[1]["seconds"]
    lines = [f"# Sharded unmasking: {e} masks at d = {d:,} ({os.cpu_count()} cores, median of {args.runs})", "",
             f"`python3 -m bench.unmask --dim {d} --masks {e}`", "",
             "| unmasker | workers | seconds | vs AES-CTR alone on 1 core | speedup vs serial |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        r["vs_limit"] = r["seconds"] / limit
        r["speedup"] = serial / r["seconds"]
        lines.append(f"| {r['unmasker']} | {r['workers']} | {r['seconds']:.3f} | {r['vs_limit']:.2f}x | "
                     f"{r['speedup']:.2f}x |")
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}; every sharded result equal to the serial one. The "
              "AES-CTR row is the keystream alone on one core (no adds): the single-core limit."]
    write_results(args.out, "unmask", rows, lines)


MASK_COUNTS = (30, 100, 1000)  # ready masks in the expansion tables
# What each of the pool's choices sets the module's thresholds to, for one call.
CHOICES = {
    "as set": {},
    "serial": dict(MIN_PARALLEL_WORK=1 << 62, MIN_PARALLEL_PAIRS=1 << 62),
    "split masks": dict(MIN_PARALLEL_WORK=0, MIN_PARALLEL_PAIRS=0, SPLIT_BY_MASKS_BYTES=1 << 62),
    "shards": dict(MIN_PARALLEL_WORK=0, MIN_PARALLEL_PAIRS=0, SPLIT_BY_MASKS_BYTES=0),
    "derive in server, shards": dict(MIN_PARALLEL_WORK=0, MIN_PARALLEL_PAIRS=1 << 62, SPLIT_BY_MASKS_BYTES=0),
}


@contextlib.contextmanager
def thresholds(**values):
    saved = {name: getattr(unmask, name) for name in values}
    for name, value in values.items():
        setattr(unmask, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(unmask, name, value)


def dropped_masks(pairs: int, gen, per_owner: int = 40) -> Masks:
    """``pairs`` dropped pairs with real X25519 keys: dropped clients of up to ``per_owner``
    surviving neighbours each (a round at n = 1,000 has k = 40-50), plus 10 ready masks."""
    owners = -(-pairs // per_owner)
    adverts = [(kex.public_key(gen.bytes(32)), kex.public_key(gen.bytes(32))) for _ in range(owners + per_owner)]
    dropped, left = [], pairs
    for u in range(owners):
        take = min(per_owner, left)
        left -= take
        peers = tuple((v, *adverts[v]) for v in range(owners, owners + take))
        dropped.append(DroppedKey(u + 1, gen.bytes(32), adverts[u], peers))
    return Masks(bytes(32), ready=[(gen.bytes(32), 1) for _ in range(10)], dropped=tuple(dropped))


def sweep(runs: int, out) -> None:
    pool = ProcessUnmasker(2)
    pool.warm()
    gen = np.random.default_rng(1)
    points = []  # (table, x, masks, base, choices)
    for count in MASK_COUNTS:
        ready = [(gen.bytes(32), 1 if i % 7 else -1) for i in range(count)]
        for log_d in range(12, 21):
            base = gen.integers(0, 2**32, 1 << log_d, dtype=np.uint64).astype(np.uint32)
            points.append((f"{count} masks", 1 << log_d, ready, base, ("as set", "serial", "split masks", "shards")))
    for pairs in (32, 64, 128, 256, 512, 1024):
        base = gen.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
        points.append(("derivation", pairs, dropped_masks(pairs, gen), base,
                       ("as set", "serial", "split masks", "derive in server, shards", "shards")))
    times = {}
    for table, x, masks, base, choices in points:  # untimed first call each, and the check
        expected = base.copy()
        SerialUnmasker()(expected, masks, 32)
        for choice in choices:
            got = base.copy()
            with thresholds(**CHOICES[choice]):
                pool(got, masks, 32)
            assert np.array_equal(got, expected), (table, x, choice)
    for _ in range(runs):  # interleaved: each repeat times every choice at every point once
        for table, x, masks, base, choices in points:
            for choice in choices:
                target = base.copy()
                with thresholds(**CHOICES[choice]):
                    t = time.perf_counter()
                    pool(target, masks, 32)
                    times.setdefault((table, x, choice), []).append(time.perf_counter() - t)
    pool.close()
    rows = [{"table": table, "x": x, "choice": choice, "seconds": statistics.median(times[table, x, choice])}
            for table, x, _, _, choices in points for choice in choices]
    lines = [f"# The pool's thresholds: its choices timed against each other ({os.cpu_count()} cores, "
             f"2 workers, median of {runs}, interleaved)", "", "`python3 -m bench.unmask --sweep`", "",
             f"Thresholds now: MIN_PARALLEL_WORK = {unmask.MIN_PARALLEL_WORK:,} mask-words, "
             f"SPLIT_BY_MASKS_BYTES = {unmask.SPLIT_BY_MASKS_BYTES:,}, "
             f"MIN_PARALLEL_PAIRS = {unmask.MIN_PARALLEL_PAIRS}.", ""]
    tables = [(f"{count} masks", f"{count} ready masks, d uint32 words", count) for count in MASK_COUNTS]
    tables.append(("derivation", "dropped pairs (40 per dropped client) at d = 1,000", None))
    for table, head, count in tables:
        choices = next(p[4] for p in points if p[0] == table)
        lines += [f"## {head}", "", "| " + ("d | sum bytes | mask-words" if count else "pairs")
                  + " | " + " | ".join(choices) + " | fastest | as set / fastest |",
                  "|" + "---:|" * (len(choices) + (5 if count else 3))]
        for x in [p[1] for p in points if p[0] == table]:
            secs = {c: statistics.median(times[table, x, c]) for c in choices}
            key = f"{x:,} | {4 * x:,} | {count * x:,}" if count else f"{x:,}"
            forced = {c: t for c, t in secs.items() if c != "as set"}
            best = min(forced, key=forced.get)
            lines.append(f"| {key} | " + " | ".join(f"{secs[c] * 1e3:.2f} ms" for c in choices)
                         + f" | {best} | {secs['as set'] / forced[best]:.2f} |")
        lines.append("")
    lines.append(f"Measured {time.strftime('%Y-%m-%d')}; every choice's result equal to the serial one.")
    write_results(out, "unmask_sweep", rows, lines)


if __name__ == "__main__":
    main()
