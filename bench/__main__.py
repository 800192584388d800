"""secagg benchmark: measured times beside this machine's limit and beside Flower's SecAgg+.

    python -m bench                                   # the standard grid and the target checks
    python -m bench --clients 100 --dim 100000 --dropout 0.1 --peer flower
    python -m bench --out bench/out --json

The limit is measured in the same run: this machine's AES-256-CTR keystream throughput into a
preallocated buffer (a fresh key per mask, as the protocol needs) and its NumPy uint32 add
throughput, each at the scenario's vector size. A party's limit is the mask words it must expand
and add divided by those throughputs:

    client_limit = E_c * d * w * (1/aes + 1/add)
    server_limit = E_s * d * w / aes + (E_s + |U3|) * d * w / add

with E_c the masks a client expands (1 + live neighbours), E_s the masks the server expands
(|U3| self masks + one per (dropped client, surviving neighbour) pair), w the word size.
Every scenario runs in its own process, so peak_rss_bytes is the scenario's own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import cpu_model

ROOT = Path(__file__).resolve().parent.parent
GRID_CLIENTS = (100, 1000)
GRID_DIMS = (10_000, 100_000, 1_000_000)
GRID_DROPOUTS = (0.0, 0.1, 0.3)
# Flower keeps every vector and reconstructs in pure Python. Past these sizes one of its rounds
# takes over 20 minutes (n = 1000, d = 10^5) or more memory than the machine has, so the peer is
# skipped there, and the report says so.
PEER_MAX_WORK = 10**8
PEER_MAX_WORK_LARGE_N = 10**7  # for n > 100


def peer_skip_reason(clients: int, dim: int) -> str | None:
    work = clients * dim
    if work > PEER_MAX_WORK:
        return f"n*d = {work:,} exceeds {PEER_MAX_WORK:,} (hours of pure-Python work, >10 GB)"
    if clients > 100 and work > PEER_MAX_WORK_LARGE_N:
        return f"n = {clients:,} with n*d = {work:,}: over 20 minutes per Flower round"
    return None


# --- the machine's limits ---------------------------------------------------------------------


def measure_limits(dim: int, trials: int = 5) -> dict:
    """Bytes per second for fresh-key AES-256-CTR expansion and for uint32 add, at size ``dim``."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    words = np.empty(dim, dtype=np.uint32)
    acc = np.zeros(dim, dtype=np.uint32)
    zeros = np.zeros(4 * dim, dtype=np.uint8)
    view = memoryview(words).cast("B")
    reps = max(4, int(64e6 // (4 * dim)))
    keys = [os.urandom(32) for _ in range(reps)]
    aes = add = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        for key in keys:
            Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, view)
        aes = min(aes, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(reps):
            np.add(acc, words, out=acc)
        add = min(add, time.perf_counter() - t0)
    total = 4 * dim * reps
    return {"dim": dim, "aes_ctr_bytes_per_second": total / aes, "add_bytes_per_second": total / add}


def client_limit(limits: dict, dim: int, expansions: int, word: int = 4) -> float:
    b = expansions * dim * word
    return b / limits["aes_ctr_bytes_per_second"] + b / limits["add_bytes_per_second"]


def server_limit(limits: dict, dim: int, expansions: int, contributors: int, word: int = 4) -> float:
    return (expansions * dim * word / limits["aes_ctr_bytes_per_second"]
            + (expansions + contributors) * dim * word / limits["add_bytes_per_second"])


# --- running scenarios ------------------------------------------------------------------------


PEER_TIMEOUT_SECONDS = 600


def worker(*args: str, timeout: float = 3600) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.worker", *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_parameters(clients: int, dropout: float) -> tuple[int, int]:
    """Flower gets the same graph degree and threshold secagg's finder picks (its num_shares
    counts the client itself, hence k + 1)."""
    from secagg.params import find_parameters

    p = find_parameters(clients, 0.05, max(dropout, 0.05))
    return p.degree + 1, p.threshold


def run_scenario(clients: int, dim: int, dropout: float, drop_stage: str, limits: dict,
                 peer: str | None, log, repeat: int = 1) -> dict:
    log(f"  secagg  n={clients:>6} d={dim:>9,} dropout={dropout:.2f}"
        + (f" x{repeat}" if repeat > 1 else "") + " ...")
    runs = [worker("secagg", "--clients", str(clients), "--dim", str(dim), "--dropout", str(dropout),
                   "--drop-stage", drop_stage, "--seed", str(i + 1)) for i in range(repeat)]
    r = dict(runs[0])
    # This VM's timings vary by 10-20% from run to run: report the median of the repeats.
    for key in ("client_seconds_median", "server_seconds", "peak_rss_bytes"):
        r[key] = statistics.median(x[key] for x in runs)
    r["exact"] = all(x["exact"] for x in runs)
    r["repeats"] = repeat
    row = {k: r[k] for k in ("clients", "dim", "dropout", "degree", "threshold", "dropped", "survivors",
                             "exact", "max_abs_error", "client_seconds_median", "server_seconds",
                             "bytes_sent_per_client", "masked_input_bytes", "peak_rss_bytes",
                             "client_mask_expansions_median", "server_mask_expansions", "aborted",
                             "repeats")}
    row["drop_stage"] = drop_stage
    row["client_limit_seconds"] = client_limit(limits, dim, r["client_mask_expansions_median"])
    row["server_limit_seconds"] = server_limit(limits, dim, r["server_mask_expansions"], r["survivors"])
    row["client_ratio_to_limit"] = row["client_seconds_median"] / row["client_limit_seconds"]
    row["server_ratio_to_limit"] = row["server_seconds"] / row["server_limit_seconds"]
    row["plaintext_float32_bytes"] = 4 * dim
    row["masked_input_expansion"] = r["masked_input_bytes"] / (4 * dim)
    if peer == "flower":
        from bench import flower_peer

        if flower_peer.available() is None:
            row["peer_skipped"] = "flwr is not installed (pip install -e '.[bench]')"
        elif (reason := peer_skip_reason(clients, dim)) is not None:
            row["peer_skipped"] = reason
        else:
            k, t = peer_parameters(clients, dropout)
            log(f"  flower  n={clients:>6} d={dim:>9,} dropout={dropout:.2f} (num_shares {k}, t {t}) ...")
            try:
                p = worker("flower", "--clients", str(clients), "--dim", str(dim), "--dropout", str(dropout),
                           "--num-shares", str(k), "--threshold", str(t), timeout=PEER_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                row["peer_skipped"] = f"Flower did not finish within {PEER_TIMEOUT_SECONDS} s"
                return row
            row.update({key: p[key] for key in ("peer_client_seconds_median", "peer_server_seconds",
                                                "peer_correct", "peer_version")})
            row["peer_peak_rss_bytes"] = p["peak_rss_bytes"]
            row["client_speedup_vs_peer"] = p["peer_client_seconds_median"] / row["client_seconds_median"]
            row["server_speedup_vs_peer"] = p["peer_server_seconds"] / row["server_seconds"]
    return row


def run_targets(limits_for, rows: list[dict], log) -> dict:
    """The issue's targets that the grid alone does not measure."""
    from secagg.params import find_parameters

    out = {}
    k = find_parameters(1000, 0.05, 0.1).degree
    lim = limits_for(1_000_000)
    log(f"  masking d=1,000,000 with {k + 1} masks (degree {k}, n = 1000) ...")
    m = worker("masking", "--dim", "1000000", "--masks", str(k + 1))
    out["client_masking"] = {**m, "degree": k,
                             "limit_seconds": client_limit(lim, 1_000_000, k + 1),
                             "ratio_to_limit": m["masking_seconds"] / client_limit(lim, 1_000_000, k + 1)}
    t = find_parameters(1000, 0.05, 0.1).threshold
    log(f"  shamir: reconstruct 1000 self-mask seeds at t = {t} ...")
    out["shamir_1000_seeds"] = worker("shamir", "--secrets", "1000", "--threshold", str(t))
    log("  scale: n = 10,000 at d = 1,000 ...")
    big = worker("secagg", "--clients", "10000", "--dim", "1000", "--dropout", "0.1")
    small = worker("secagg", "--clients", "1000", "--dim", "1000", "--dropout", "0.1")
    out["scale"] = {
        "n1000_server_seconds": small["server_seconds"],
        "n10000_server_seconds": big["server_seconds"],
        "n1000_server_ms_per_client": 1e3 * small["server_seconds"] / 1000,
        "n10000_server_ms_per_client": 1e3 * big["server_seconds"] / 10000,
        "n10000_exact": big["exact"],
        "n10000_client_seconds_median": big["client_seconds_median"],
        "n10000_peak_rss_bytes": big["peak_rss_bytes"],
    }
    return out


def machine() -> dict:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "cryptography": cryptography.__version__,
            "openssl": backend.openssl_version_text(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, help="one scenario: number of clients")
    parser.add_argument("--dim", type=int, help="one scenario: vector length")
    parser.add_argument("--dropout", type=float, default=None, help="one scenario: dropout fraction")
    parser.add_argument("--drop-stage", default="masked",
                        help="advertise | share | masked | unmask | mixed (default masked)")
    parser.add_argument("--peer", choices=["flower"], default=None, help="also run Flower's SecAgg+")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per scenario, each in a fresh process; times are the median")
    parser.add_argument("--no-targets", action="store_true", help="skip the target checks")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the scenarios already in OUT/rows.jsonl (written as each completes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per scenario")
    parser.add_argument("--out", type=Path, default=None, help="write results.json, results.md, plots")
    args = parser.parse_args(argv)

    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
    single = args.clients is not None or args.dim is not None
    if single and (args.clients is None or args.dim is None):
        parser.error("a single scenario needs both --clients and --dim")
    if single:
        scenarios = [(args.clients, args.dim, args.dropout if args.dropout is not None else 0.1)]
    else:
        dropouts = GRID_DROPOUTS if args.dropout is None else (args.dropout,)
        scenarios = [(n, d, f) for n in GRID_CLIENTS for d in GRID_DIMS for f in dropouts]

    if args.peer == "flower":
        from bench import flower_peer

        if flower_peer.available() is None:
            log("peer skipped: Flower (flwr) is not installed; pip install -e '.[bench]'")

    cache: dict[int, dict] = {}

    def limits_for(dim: int) -> dict:
        if dim not in cache:
            cache[dim] = measure_limits(dim)
        return cache[dim]

    log("secagg benchmark on " + machine()["cpu"])
    done: dict[tuple, dict] = {}
    stream = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        rows_file = args.out / "rows.jsonl"
        if args.resume and rows_file.exists():
            for line in rows_file.read_text().splitlines():
                r = json.loads(line)
                done[(r["clients"], r["dim"], r["dropout"], r["drop_stage"])] = r
            log(f"resuming: {len(done)} scenarios already measured in {rows_file}")
        stream = rows_file.open("a" if args.resume else "w")
    rows = []
    for n, d, f in scenarios:
        key = (n, d, f, args.drop_stage)
        if key in done and (args.peer is None or "peer_server_seconds" in done[key] or "peer_skipped" in done[key]):
            row = done[key]
        else:
            row = run_scenario(n, d, f, args.drop_stage, limits_for(d), args.peer, log, args.repeat)
            if stream:
                stream.write(json.dumps(row) + "\n")
                stream.flush()
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    for n, d, _ in scenarios:
        limits_for(d)  # resumed rows still get this run's limits in the report
    targets = {} if (single or args.no_targets) else run_targets(limits_for, rows, log)
    results = {"machine": machine(), "limits": list(cache.values()), "scenarios": rows, "targets": targets}

    from bench.report import markdown, plots, table

    if not args.json:
        print()
        print(table(results))
    if args.out:
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "results.md").write_text(markdown(results))
        written = plots(results, args.out)
        log(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}"
            + (f" and {len(written)} plots" if written else
               " and no plots (they need matplotlib and two or more points along n or d)"))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
