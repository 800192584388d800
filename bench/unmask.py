"""Sharded unmasking: the server's last phase on 1 and 2 workers, against this machine's limit.

The work is a server's unmasking at d coordinates: E masks (one per survivor's self mask, one per
dropped client and surviving neighbour) expanded with AES-CTR and added to the sum. The limit is
E d 4 bytes at this machine's single-core AES-CTR throughput (measured in the same run) plus the
adds; speedup is serial time over sharded time, for threads and for the process pool.

    python3 -m bench.unmask [--dim 1000000] [--masks 200] [--runs 3]

writes bench/results/unmask.json and unmask.md.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench import median_seconds, write_results
from secagg.crypto import prg
from secagg.protocol.unmask import ProcessUnmasker, SerialUnmasker, ThreadUnmasker


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10**6)
    parser.add_argument("--masks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    main()
