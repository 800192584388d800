"""Rounds over a network that misbehaves: how many end exact, how many abort, how many are wrong.

    python3 -m bench.faults --rounds 300 --out bench/results

Each round draws n in [5, 200], d in {10, 1000, 10000}, a dropout rate in {0, 0.1, 0.3} at
mixed stages, and a network that duplicates each frame with probability 0, 0.2 or 1, holds
frames past the phase's deadline with probability 0, 0.01 or 0.05, and reorders or not. The
reference sum comes from the clients' encoders (``TruthRecorder``); a round is "wrong" if it
returns a sum that differs from it. Writes ``faults.json`` and ``faults.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

from secagg import simulate
from secagg.transport.memory import Faults


def run(rounds: int, seed: int) -> dict:
    gen = np.random.default_rng(seed)
    outcomes: Counter[str] = Counter()
    ignored: Counter[str] = Counter()
    excluded = refused = 0
    reasons: list[str] = []
    frames = duplicated = delayed = 0
    start = time.perf_counter()
    for i in range(rounds):
        n = int(gen.integers(5, 201))
        dim = int(gen.choice([10, 1000, 10_000]))
        faults = Faults(duplicate=float(gen.choice([0.0, 0.2, 1.0])), delay=float(gen.choice([0.0, 0.01, 0.05])),
                        reorder=bool(gen.integers(2)), seed=int(gen.integers(2**31)))
        report = simulate(n, dim, dropout=float(gen.choice([0.0, 0.1, 0.3])), drop_stage="mixed",
                          dropout_rate=0.3, seed=int(gen.integers(2**31)), bits=32, faults=faults)
        if report.aborted:
            outcomes["aborted"] += 1
            reasons.append(f"n = {n}: {report.abort_reason}")
        elif report.exact:
            outcomes["exact"] += 1
        elif report.exact is None:
            outcomes["unverified"] += 1
        else:
            outcomes["wrong"] += 1
        ignored.update(report.ignored)
        excluded += len(report.excluded)
        refused += len(report.refusals)
        frames += report.network["frames"]
        duplicated += report.network["duplicated"]
        delayed += report.network["delayed"]
    return {
        "rounds": rounds, "seed": seed, "outcomes": dict(outcomes), "frames": frames,
        "duplicated": duplicated, "delayed_past_deadline": delayed,
        "ignored_by_server": dict(ignored), "clients_excluded": excluded, "client_refusals": refused,
        "abort_reasons": reasons, "seconds": time.perf_counter() - start, "machine": platform.processor() or platform.machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    res = run(args.rounds, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(res, indent=2) + "\n")
    o = res["outcomes"]
    md = [
        "# Rounds over a faulty network",
        "",
        f"`python3 -m bench.faults --rounds {res['rounds']} --seed {res['seed']}`: n in [5, 200], "
        "d in {10, 10^3, 10^4}, dropout 0/10/30% at mixed stages, each frame duplicated with "
        "probability 0/0.2/1, held past its phase's deadline with probability 0/0.01/0.05, "
        "reordered or not.",
        "",
        "| rounds | exact | aborted (named reason) | wrong sum | frames | duplicated | delayed |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {res['rounds']} | {o.get('exact', 0)} | {o.get('aborted', 0)} | {o.get('wrong', 0)} | "
        f"{res['frames']:,} | {res['duplicated']:,} | {res['delayed_past_deadline']:,} |",
        "",
        "Frames the servers ignored, by reason: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(res["ignored_by_server"].items())) + ". "
        f"Clients excluded: {res['clients_excluded']} (the network's faults are never blamed on a "
        f"client); client refusals: {res['client_refusals']}. Run time {res['seconds']:.0f} s.",
        "",
        "Why the aborted rounds aborted:",
        "",
        *[f"- {r}" for r in res["abort_reasons"]],
    ]
    (args.out / "faults.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 1 if o.get("wrong") or o.get("unverified") else 0


if __name__ == "__main__":
    raise SystemExit(main())
