"""Clients at scale: one round at n = 100,000 (d = 1,000) and at d = 10^5 (n = 10,000), the
clients on a process pool (``secagg.sim.pool``), the server in the parent process.

Each point runs in a fresh process (so its peak RSS is that round's): the round's wall time, the
server's time (all its calls, measured in the parent while the workers run), its phases, the
parent's peak RSS (the server's memory: O(d + n k)), each client worker's peak RSS, and whether the
sum is exact. A soak, not a test: at n = 100,000 the round takes tens of minutes on 2 cores.

    python3 -m bench.scale_clients [--points 2000x1000,100000x1000,10000x100000] [--dropout 0.1]
                                   [--client-workers W]

writes bench/results/scale_clients.json and scale_clients.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from bench import write_results

DEFAULT_POINTS = "2000x1000,5000x1000,10000x1000,100000x1000,10000x100000"


def one(n: int, d: int, dropout: float, workers: int | None, seed: int) -> dict:
    """One round in this process; returns its row."""
    from secagg.simulate import simulate

    t0 = time.perf_counter()
    report = simulate(n, d, dropout=dropout, seed=seed, client_workers=workers, progress=True)
    wall = time.perf_counter() - t0
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "clients": n, "dim": d, "dropout": dropout, "client_workers": report.client_workers,
        "degree": report.degree, "threshold": report.threshold, "survivors": report.survivors,
        "exact": report.exact, "aborted": report.aborted, "round_seconds": wall,
        "server_seconds": report.server_seconds,
        "server_phase_seconds": {p: t["server"] for p, t in report.phase_seconds.items()},
        "client_seconds_total": sum(t["clients"] for t in report.phase_seconds.values()),
        "client_seconds_median": report.client_seconds_median,
        # CPU time, which a machine shared with other jobs does not inflate: this process (the
        # server, the driver, the report) and its finished children (the client workers).
        "parent_cpu_seconds": own.ru_utime + own.ru_stime,
        "workers_cpu_seconds": children.ru_utime + children.ru_stime,
        "server_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak_rss_bytes": max(report.worker_peak_rss_bytes, default=None),
        "bytes_sent_per_client": report.bytes_sent_per_client,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default=DEFAULT_POINTS, help="comma-separated NxD")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--client-workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # NxD, in this process
    args = parser.parse_args(argv)
    workers = args.client_workers if args.client_workers is not None else os.cpu_count() or 1
    if args.one:
        n, d = (int(v) for v in args.one.split("x"))
        print(json.dumps(one(n, d, args.dropout, workers, args.seed)))
        return
    rows = []
    for point in args.points.split(","):
        cmd = [sys.executable, "-m", "bench.scale_clients", "--one", point, "--dropout", str(args.dropout),
               "--client-workers", str(workers), "--seed", str(args.seed)]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)  # progress on stderr
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_results(args.out, "scale_clients", rows, render(rows, f"--points {args.points} --dropout {args.dropout}"))


def render(rows: list[dict], flags: str) -> list[str]:
    """The markdown table of ``rows`` (``flags``: the command line that made them)."""
    mib = 2**20
    workers = sorted({r["client_workers"] for r in rows})
    dropouts = sorted({r["dropout"] for r in rows})
    lines = [f"# Clients at scale: one round, {' / '.join(f'{x:.0%}' for x in dropouts)} dropout, clients on "
             f"{' / '.join(map(str, workers))} worker processes ({os.cpu_count()} cores)", "",
             f"`python3 -m bench.scale_clients {flags}`", "",
             "| n | d | k | t | round s | server s | server phases s (advertise / share / masked / unmask) "
             "| parent CPU s | workers CPU s | server peak RSS MiB | worker peak RSS MiB | exact |",
             "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        phases = " / ".join(f"{r['server_phase_seconds'].get(p, 0.0):.1f}"
                            for p in ("AdvertiseKeys", "ShareKeys", "MaskedInput", "Unmask"))
        worker = r["worker_peak_rss_bytes"]
        lines.append(
            f"| {r['clients']:,} | {r['dim']:,} | {r['degree']} | {r['threshold']} | {r['round_seconds']:.1f} "
            f"| {r['server_seconds']:.1f} | {phases} | {r['parent_cpu_seconds']:.0f} "
            f"| {r['workers_cpu_seconds']:.0f} | {r['server_peak_rss_bytes'] / mib:,.0f} "
            f"| {'-' if worker is None else f'{worker / mib:,.0f}'} | {'yes' if r['exact'] else 'NO'} |")
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}, each point in a fresh process. Server time is every "
              "call into the server (wall time), timed in the parent while the workers run (on a machine with "
              "as many cores as workers, the server shares them); the CPU columns are process CPU time, which "
              "other jobs on the machine do not inflate. The server's peak RSS is the parent's (the "
              "interpreter and NumPy included); a worker's is its own process's."]
    return lines


if __name__ == "__main__":
    main()
