"""Scaling the server: its time against this machine's limit on 1 and 2 cores, against n, with Ray.

Every round runs in a fresh process (``bench.worker secagg``), so peak memory is the round's own,
and reports the median of ``--repeat`` runs; at each point the configs run interleaved within each
repeat, with the same seed, and the speedups are the medians of those paired ratios (whole-round
server times vary by about 20% from run to run on this machine). Unmaskers: ``serial`` (one core), ``thread`` and
``process`` (``--workers`` of them; the process pool, the default, is started before the round,
as a server that runs many rounds starts it once), and ``ray`` (a local Ray instance with as many
CPUs). The limit is ``bench``'s: the server's mask expansions and adds at this machine's
single-core AES-CTR and add throughput, measured in the same run (bench/README.md); on W cores the
expansion part can at best divide by W. The floor adds what no server of this protocol avoids on
one core: deriving each dropped pair's seed (X25519, pair hash, HKDF), timed in the same run.

    python3 -m bench.scale [--repeat 3] [--ns 100,300,1000,3000] [--out bench/results]

writes scale.json, scale.md, scale_cores.png (server time against cores at each point, with the
limit and the floor) and scale_n.png (server time against n at d = 10^4 on 1 core and on the
2-process pool, with the limit and the floor).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from bench import write_results
from bench.__main__ import measure_limits, server_limit, worker

POINTS = ((1000, 10**4, 0.1), (1000, 10**5, 0.1), (100, 10**6, 0.1))
CONFIGS = (("serial", 1), ("thread", 2), ("process", 2))
N_DIM = 10**4


def derive_seconds_per_pair(pairs: int = 2000, trials: int = 3) -> float:
    """Seconds to derive one dropped pair's mask seed (X25519, the pair hash and HKDF), as the
    server does for each surviving neighbour of a dropped client: best of ``trials`` runs."""
    from secagg.crypto import kex
    from secagg.protocol.unmask import DroppedKey, derive

    advert = lambda: (kex.public_key(os.urandom(32)), kex.public_key(os.urandom(32)))  # noqa: E731
    dropped = DroppedKey(0, os.urandom(32), advert(), tuple((v, *advert()) for v in range(1, pairs + 1)))
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        for _seed in derive(os.urandom(32), dropped):
            pass
        best = min(best, time.perf_counter() - t0)
    return best / pairs


def run_point(clients: int, dim: int, dropout: float, configs, repeat: int, limits: dict, log) -> list[dict]:
    """Every (unmasker, workers) config at one point, ``repeat`` times, the configs interleaved
    within each repeat (same seed), so that drift on the machine hits them alike; one row per
    config. ``paired_speedup``: the median over repeats of serial time over this config's."""
    runs: dict[tuple[str, int], list[dict]] = {config: [] for config in configs}
    for i in range(repeat):
        for unmasker, workers in configs:
            log(f"n={clients:,} d={dim:,} dropout={dropout}: {unmasker} x{workers}, run {i + 1}/{repeat} ...")
            runs[(unmasker, workers)].append(
                worker("secagg", "--clients", str(clients), "--dim", str(dim), "--dropout", str(dropout),
                       "--seed", str(i + 1), "--unmasker", unmasker, "--workers", str(workers)))
    serial = runs.get(("serial", 1))
    return [summarise(clients, dim, dropout, unmasker, workers, these, serial, limits)
            for (unmasker, workers), these in runs.items()]


def summarise(clients, dim, dropout, unmasker, workers, runs, serial, limits) -> dict:
    first = runs[0]
    row = {"clients": clients, "dim": dim, "dropout": dropout, "unmasker": unmasker, "workers": workers,
           "repeats": len(runs), "exact": all(r["exact"] for r in runs),
           "server_seconds": statistics.median(r["server_seconds"] for r in runs),
           "server_seconds_each": [r["server_seconds"] for r in runs],
           "unmask_phase_seconds": statistics.median(r["phase_seconds"]["Unmask"]["server"] for r in runs),
           "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
           "unmask_worker_peak_rss_bytes": max((max(r["unmask_worker_peak_rss_bytes"], default=0) for r in runs), default=0),
           "server_mask_expansions": first["server_mask_expansions"], "survivors": first["survivors"],
           "degree": first["degree"], "threshold": first["threshold"]}
    if serial:
        row["paired_speedup"] = statistics.median(s["server_seconds"] / r["server_seconds"] for s, r in zip(serial, runs))
        row["paired_unmask_speedup"] = statistics.median(
            s["phase_seconds"]["Unmask"]["server"] / r["phase_seconds"]["Unmask"]["server"] for s, r in zip(serial, runs))
    row["limit_seconds"] = server_limit(limits, dim, row["server_mask_expansions"], row["survivors"])
    row["ratio_to_limit"] = row["server_seconds"] / row["limit_seconds"]
    # Every mask the server removes that is not a survivor's self mask is a dropped pair's.
    row["dropped_pairs"] = row["server_mask_expansions"] - row["survivors"]
    row["floor_seconds"] = row["limit_seconds"] + row["dropped_pairs"] * limits["derive_seconds_per_pair"]
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ns", default="100,300,1000,3000", help=f"n for the sweep at d = {N_DIM:,}")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    limits = {d: measure_limits(d) for d in sorted({p[1] for p in POINTS} | {N_DIM})}
    per_pair = derive_seconds_per_pair()
    for value in limits.values():
        value["derive_seconds_per_pair"] = per_pair
    rows = []
    for n, d, rate in POINTS:
        configs = CONFIGS + ((("ray", 2),) if not args.no_ray and d == 10**6 else ())
        rows += [{"part": "points", **row} for row in run_point(n, d, rate, configs, args.repeat, limits[d], log)]
    for n in (int(x) for x in args.ns.split(",")):
        if n == 1000 and any((r["clients"], r["dim"]) == (n, N_DIM) for r in rows):
            continue  # measured above
        rows += [{"part": "n", **row} for row in
                 run_point(n, N_DIM, 0.1, (("serial", 1), ("process", 2)), args.repeat, limits[N_DIM], log)]
    seconds = time.perf_counter() - started
    lines = report(rows, limits, args, seconds)
    write_results(args.out, "scale", rows, lines)
    plot(rows, Path(args.out))


def report(rows, limits, args, seconds) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mb = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    lines = [f"# Scaling the server ({cores} cores; median of {args.repeat} fresh-process rounds; "
             f"{seconds / 60:.1f} min)", "",
             f"`python3 -m bench.scale --repeat {args.repeat} --ns {args.ns}`", "",
             "Limit: the server's mask expansions and adds at this machine's single-core AES-CTR ("
             + ", ".join(f"{v['aes_ctr_bytes_per_second'] / 1e9:.2f} GB/s at d = {d:,}" for d, v in limits.items())
             + ") and add throughput, measured in this run. Floor: the limit plus deriving each dropped "
             "pair's seed (X25519, pair hash, HKDF: "
             f"{next(iter(limits.values()))['derive_seconds_per_pair'] * 1e6:.0f} us a pair on one core, "
             "measured in this run), work every server of this protocol does on one core. Speedups: the "
             "median over repeats of the serial round's time over this config's, the configs run "
             "interleaved with the same seeds (whole server; unmask phase). Worker memory: the largest "
             "unmasking pool process's peak RSS.", "",
             "| n | d | dropout | unmasker | workers | server s | unmask phase s | x limit (1 core) "
             "| dropped pairs | floor x limit | speedup | unmask speedup | server peak RSS MB | worker peak RSS MB | exact |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['clients']:,} | {r['dim']:,} | {r['dropout']:.0%} | {r['unmasker']} | {r['workers']} | "
                     f"{r['server_seconds']:.3f} | {r['unmask_phase_seconds']:.3f} | {r['ratio_to_limit']:.2f} | "
                     f"{r['dropped_pairs']:,} | {r['floor_seconds'] / r['limit_seconds']:.2f} | "
                     f"{r.get('paired_speedup', float('nan')):.2f} | "
                     f"{r.get('paired_unmask_speedup', float('nan')):.2f} | {mb(r['peak_rss_bytes'])} | "
                     f"{mb(r['unmask_worker_peak_rss_bytes']) if r['unmask_worker_peak_rss_bytes'] else '-'} | "
                     f"{'yes' if r['exact'] else 'NO'} |")
    ray = [r for r in rows if r["unmasker"] == "ray"]
    for r in ray:
        pool = next(p for p in rows if p["unmasker"] == "process" and (p["clients"], p["dim"]) == (r["clients"], r["dim"]))
        lines += ["", f"Ray against the process pool at n = {r['clients']:,}, d = {r['dim']:,} "
                  f"({r['workers']} shards, a local Ray instance started before the round): unmask phase "
                  f"{r['unmask_phase_seconds']:.3f} s against {pool['unmask_phase_seconds']:.3f} s, "
                  f"{r['unmask_phase_seconds'] / pool['unmask_phase_seconds']:.2f}x; peak RSS of the server "
                  f"process {mb(r['peak_rss_bytes'])} MB against {mb(pool['peak_rss_bytes'])} MB (Ray's own "
                  "processes not counted)."]
    return lines


def plot(rows, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(n, d) for n, d, _ in POINTS]
    fig, axes = plt.subplots(1, len(points), figsize=(4.5 * len(points), 4))
    for ax, (n, d) in zip(axes, points):
        here = [r for r in rows if r["part"] == "points" and (r["clients"], r["dim"]) == (n, d)]
        for unmasker, marker, label in (("thread", "o", "threads"), ("process", "s", "process pool")):
            line = sorted([r for r in here if r["unmasker"] in ("serial", unmasker)], key=lambda r: r["workers"])
            ax.plot([r["workers"] for r in line], [r["server_seconds"] for r in line], marker=marker,
                    label=f"{label} (1 core: serial)")
        limit = here[0]["limit_seconds"]
        ax.plot([1, 2], [limit, limit / 2], "k--", label="limit (AES-CTR + add)")
        ax.plot([1], [here[0]["floor_seconds"]], "kx", label="floor: limit + dropped pairs' X25519/HKDF")
        ax.set_title(f"n = {n:,}, d = {d:,}")
        ax.set_xlabel("cores")
        ax.set_xticks([1, 2])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("server seconds per round")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scale_cores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    sweep = [r for r in rows if r["dim"] == N_DIM and r["unmasker"] in ("serial", "process")]
    for unmasker, label in (("serial", "1 core"), ("process", "2 processes (the default pool)")):
        line = sorted([r for r in sweep if r["unmasker"] == unmasker], key=lambda r: r["clients"])
        ax.plot([r["clients"] for r in line], [r["server_seconds"] for r in line], marker="o", label=label)
    line = sorted([r for r in sweep if r["unmasker"] == "serial"], key=lambda r: r["clients"])
    ax.plot([r["clients"] for r in line], [r["limit_seconds"] for r in line], "k--", label="limit (1 core)")
    ax.plot([r["clients"] for r in line], [r["floor_seconds"] for r in line], "k:",
            label="floor: limit + dropped pairs' X25519/HKDF (1 core)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients n")
    ax.set_ylabel("server seconds per round")
    ax.set_title(f"server time against n, d = {N_DIM:,}, 10% dropout")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scale_n.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
