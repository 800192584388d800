"""One measurement per process, so that peak memory is the scenario's own. Prints one JSON object.

    python -m bench.worker secagg  --clients N --dim D --dropout F [--drop-stage S] [--seed S]
                                   [--workers W] [--unmasker serial|thread|process|ray]
    python -m bench.worker flower  --clients N --dim D --dropout F --num-shares K --threshold T
    python -m bench.worker masking --dim D --masks M
    python -m bench.worker shamir  --secrets M --threshold T
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_secagg(args) -> dict:
    from secagg import simulate
    from secagg.protocol.unmask import SerialUnmasker, make_unmasker

    if args.unmasker == "serial":
        unmasker = SerialUnmasker()
    elif args.unmasker == "ray":
        unmasker = make_unmasker(args.workers, kind="ray", num_cpus=args.workers, include_dashboard=False)
    else:
        unmasker = make_unmasker(args.workers, kind=args.unmasker)
    unmasker.warm()  # a pool starts once per server, not once per round
    # A server that has run a round before: one throwaway unmasking at this size (big enough to
    # use the pool), so that no unmasker's first-touch costs (buffers, the workers' first AES
    # contexts) land in the measured round.
    from secagg.protocol.unmask import MIN_PARALLEL_WORK
    from secagg.quantize import ring_dtype

    spare = np.zeros(args.dim, dtype=ring_dtype(args.bits))
    unmasker(spare, [(bytes(32), 1)] * (MIN_PARALLEL_WORK // args.dim + 1), args.bits)
    # Clients in process, as the grid and its n = 10,000 check have always been timed (the server
    # alone on a core); bench.scale_clients runs them on worker processes.
    report = simulate(args.clients, args.dim, dropout=args.dropout, drop_stage=args.drop_stage,
                      bits=args.bits, seed=args.seed, unmasker=unmasker, client_workers=0)
    out = report.as_dict()
    out.pop("dropped_by_stage")
    out["unmasker"] = args.unmasker
    out["workers"] = getattr(unmasker, "workers", 1)
    # The pool's processes are this process's children: their own peak memory (VmHWM).
    out["unmask_worker_peak_rss_bytes"] = [peak_rss_of(pid) for pid in getattr(unmasker, "pids", ())]
    if hasattr(unmasker, "close"):
        unmasker.close()
    return out


def peak_rss_of(pid: int) -> int:
    """The peak resident memory of process ``pid`` (Linux: VmHWM in /proc/pid/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run_flower(args) -> dict:
    from bench.flower_peer import run_flower_secaggplus

    return run_flower_secaggplus(args.clients, args.dim, args.dropout, args.num_shares, args.threshold,
                                 seed=args.seed or 0)


def run_masking(args) -> dict:
    """The client's masking step alone: M masks of d words expanded and added (as a client with
    M - 1 live neighbours does), best of several repetitions."""
    from secagg.protocol.masking import apply_masks

    target = np.zeros(args.dim, dtype=np.uint32)
    seeds = [(os.urandom(32), 1 if i % 2 else -1) for i in range(args.masks)]
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        apply_masks(target, seeds, 32)
        best = min(best, time.perf_counter() - t0)
    return {"dim": args.dim, "masks": args.masks, "masking_seconds": best}


def run_shamir(args) -> dict:
    """Batched reconstruction of M secrets, each from t shares held by different neighbours."""
    from secagg.crypto import shamir

    shamir.warm_up()
    holders = list(range(1, args.threshold + 11))
    sets = []
    for i in range(args.secrets):
        shares = shamir.split([os.urandom(32)], holders, args.threshold, os.urandom)
        offset = i % 10  # different x-sets, as in a real round
        sets.append([(holders[j], shares[j][0]) for j in range(offset, offset + args.threshold)])
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        shamir.reconstruct_many(sets, args.threshold)
        best = min(best, time.perf_counter() - t0)
    return {"secrets": args.secrets, "threshold": args.threshold, "reconstruct_seconds": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("kind", choices=["secagg", "flower", "masking", "shamir"])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--drop-stage", default="masked")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-shares", type=int, default=0)
    parser.add_argument("--threshold", type=int, default=0)
    parser.add_argument("--masks", type=int, default=1)
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="secagg: unmasking workers (default: every core)")
    parser.add_argument("--unmasker", choices=["serial", "thread", "process", "ray"], default="thread")
    args = parser.parse_args(argv)
    result = {"secagg": run_secagg, "flower": run_flower, "masking": run_masking,
              "shamir": run_shamir}[args.kind](args)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
