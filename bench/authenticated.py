"""Authenticated mode against semi-honest, same scenario, interleaved repeats, in one process.

    python3 -m bench.authenticated [--points 100x100000,1000x10000] [--dropout 0.1] [--repeats 3]

For each (n, d), three modes, run in turn ``--repeats`` times (medians reported; single runs on a
shared 2-core machine vary by +-20%):

- ``semi-honest``: the default semi-honest round (the finder's semi-honest k and t);
- ``semi-honest, malicious (k, t)``: the same protocol with the malicious class's larger k and t;
- ``authenticated``: operator-signed config, signed adverts checked against an SQLite registry by
  the server and every client, the ConsistencyCheck round; the malicious class's k and t.

authenticated / (semi-honest, malicious (k, t)) is the protocol's overhead at equal parameters
(the issue's 15% goal); authenticated / semi-honest is the whole price of the malicious-server
guarantee. Reported per mode: the median client's protocol time, the server's time, and the bytes
a full participant sends and receives. Enrolling the clients (CA certificates, registry writes)
happens before the round and is not timed; the registry's first lookup of each client verifies
its certificate against the CA (once per server process), and that cost is measured separately
(cold and warm ``Registry.enrolled``). Writes bench/results/authenticated.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench import cpu_model, write_results
from secagg import simulate
from secagg.crypto import shamir
from secagg.crypto.randomness import DeterministicRandom
from secagg.sim.scenario import enrolled_clients

MODES = (
    ("semi-honest", dict(authenticated=False)),
    ("semi-honest, malicious (k, t)", dict(authenticated=False, adversary="malicious")),
    ("authenticated", dict(authenticated=True)),
)
FIELDS = ("client_seconds_median", "server_seconds", "bytes_sent_per_client", "bytes_received_per_client")


def registry_seconds(n: int) -> dict:
    _, registry = enrolled_clients(range(1, n + 1), DeterministicRandom("bench registry"))
    out = {}
    for kind in ("cold", "warm"):
        t0 = time.perf_counter()
        registry.enrolled(range(1, n + 1))
        out[kind] = time.perf_counter() - t0
    return out


def run(points, dropout: float, repeats: int) -> list[dict]:
    rows = []
    shamir.warm_up(jit=True)
    for n, d in points:
        samples: dict[str, list] = {name: [] for name, _ in MODES}
        for _ in range(repeats):
            for name, kw in MODES:
                r = simulate(n, d, dropout=dropout, seed=1, **kw)
                samples[name].append((r, {f: getattr(r, f) for f in FIELDS}))
        for name, runs in samples.items():
            first = runs[0][0]
            rows.append({
                "clients": n, "dim": d, "dropout": dropout, "mode": name,
                "degree": first.degree, "threshold": first.threshold,
                "exact": all(r.exact for r, _ in runs), "repeats": repeats,
                **{f: statistics.median(v[f] for _, v in runs) for f in FIELDS},
                "client_seconds_runs": [v["client_seconds_median"] for _, v in runs],
                "server_seconds_runs": [v["server_seconds"] for _, v in runs],
            })
        rows.append({"clients": n, "dim": d, "mode": "registry lookup of all n clients",
                     **registry_seconds(n)})
    return rows


def _ratio(a: dict, b: dict, field: str) -> str:
    return f"x{a[field] / b[field]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="100x100000,1000x10000")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    points = [tuple(int(v) for v in p.split("x")) for p in args.points.split(",")]
    rows = run(points, args.dropout, args.repeats)
    lines = ["# Authenticated mode against semi-honest", "",
             f"`python3 -m bench.authenticated --points {args.points} --dropout {args.dropout} "
             f"--repeats {args.repeats}` on {cpu_model()}; modes interleaved, medians of "
             f"{args.repeats} runs, same seed, one process.", "",
             "| n | d | mode | k | t | exact | client ms (median) | server s | sent / client | received / client |",
             "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|"]
    by_point: dict = {}
    for r in rows:
        if "cold" in r:
            by_point.setdefault((r["clients"], r["dim"]), {})["registry"] = r
            continue
        by_point.setdefault((r["clients"], r["dim"]), {})[r["mode"]] = r
        lines.append(f"| {r['clients']:,} | {r['dim']:,} | {r['mode']} | {r['degree']} | {r['threshold']} | "
                     f"{r['exact']} | {r['client_seconds_median'] * 1e3:.2f} | {r['server_seconds']:.3f} | "
                     f"{r['bytes_sent_per_client']:,.0f} | {r['bytes_received_per_client']:,.0f} |")
    lines.append("")
    for (n, d), modes in by_point.items():
        a, same, base, reg = (modes["authenticated"], modes["semi-honest, malicious (k, t)"],
                              modes["semi-honest"], modes["registry"])
        lines.append(
            f"- n = {n:,}, d = {d:,}. Protocol overhead at equal (k, t) = ({a['degree']}, {a['threshold']}): "
            f"client {_ratio(a, same, 'client_seconds_median')}, server {_ratio(a, same, 'server_seconds')}, "
            f"bytes received per client {_ratio(a, same, 'bytes_received_per_client')}. Against the default "
            f"semi-honest round (k, t) = ({base['degree']}, {base['threshold']}): client "
            f"{_ratio(a, base, 'client_seconds_median')}, server {_ratio(a, base, 'server_seconds')}. "
            f"The server's first registry lookup of all {n:,} clients (certificate checks) takes "
            f"{reg['cold']:.3f} s cold, {reg['warm'] * 1e3:.1f} ms warm (a later round in the same process).")
    write_results(args.out, "authenticated", rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
