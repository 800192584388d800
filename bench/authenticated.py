"""Authenticated mode against semi-honest, same scenario, one run each, in one process.

    python3 -m bench.authenticated [--points 100x100000,1000x10000] [--dropout 0.1]

For each (n, d): the median client's protocol time, the server's time, and the bytes a full
participant sends and receives, in both modes; authenticated = signed adverts checked against an
SQLite registry by the server and every client, plus the ConsistencyCheck round. Enrolling the
clients (CA certificates, registry writes) happens before the round and is not timed. Writes
bench/results/authenticated.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import cpu_model
from secagg import simulate
from secagg.crypto import shamir


def run(points, dropout: float) -> list[dict]:
    rows = []
    shamir.warm_up(jit=True)
    for n, d in points:
        for authenticated in (False, True):
            r = simulate(n, d, dropout=dropout, seed=1, authenticated=authenticated)
            rows.append({"clients": n, "dim": d, "dropout": dropout, "authenticated": authenticated,
                         "exact": r.exact, "client_seconds_median": r.client_seconds_median,
                         "server_seconds": r.server_seconds, "bytes_sent_per_client": r.bytes_sent_per_client,
                         "bytes_received_per_client": r.bytes_received_per_client})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="100x100000,1000x10000")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    points = [tuple(int(v) for v in p.split("x")) for p in args.points.split(",")]
    rows = run(points, args.dropout)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "authenticated.json").write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=2) + "\n")
    lines = ["# Authenticated mode against semi-honest", "",
             f"`python3 -m bench.authenticated --points {args.points} --dropout {args.dropout}` on {cpu_model()}; "
             "one run per mode, same seed, in one process.", "",
             "| n | d | mode | exact | client ms (median) | server s | sent / client | received / client |",
             "|---:|---:|---|---|---:|---:|---:|---:|"]
    by_point = {}
    for r in rows:
        by_point.setdefault((r["clients"], r["dim"]), {})[r["authenticated"]] = r
        lines.append(f"| {r['clients']:,} | {r['dim']:,} | {'authenticated' if r['authenticated'] else 'semi-honest'} | "
                     f"{r['exact']} | {r['client_seconds_median'] * 1e3:.2f} | {r['server_seconds']:.3f} | "
                     f"{r['bytes_sent_per_client']:,} | {r['bytes_received_per_client']:,} |")
    lines.append("")
    for (n, d), pair in by_point.items():
        a, s = pair[True], pair[False]
        lines.append(f"- n = {n:,}, d = {d:,}: client time x{a['client_seconds_median'] / s['client_seconds_median']:.2f}, "
                     f"server time x{a['server_seconds'] / s['server_seconds']:.2f}, bytes received per client "
                     f"x{a['bytes_received_per_client'] / s['bytes_received_per_client']:.2f}.")
    (args.out / "authenticated.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
