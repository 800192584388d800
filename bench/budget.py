"""A client's privacy budget: what recomputing its epsilon costs as its ledger grows.

A ledger file with R recorded rounds is reopened and its spent epsilon recomputed from every row
(``PrivacyBudget.spent`` on a fresh handle: the SQLite read, RDP curves and dp-accounting's PLD
composition), and one more round is charged (the same work plus the write transaction). Ledgers:

- ``same``: R rounds of one plan (one group, self-composed);
- ``plans_10``: R rounds cycling through 10 plans (noise multipliers 1.0 .. 1.9);
- ``distinct``: R rounds, each of its own plan (R groups: the worst case for PLD, R convolutions);
- ``sampled``: R rounds of one plan charged at q = 0.1 (the subsampled RDP bound per order).

    python3 -m bench.budget [--rounds 100] [--runs 3]

writes bench/results/budget.json and budget.md (median of --runs, in this process).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench import cpu_model, median_seconds
from secagg.privacy import DPPlan, PrivacyBudget

RESULTS = Path(__file__).resolve().parent / "results"
DELTA = 1e-6


def _plans(kind: str, rounds: int):
    def plan(z):
        return DPPlan.create(1000, clip=1.0, noise_multiplier=z, min_clients=50, max_clients=100,
                             rotation_seed=b"\x02" * 32)
    if kind == "distinct":
        return [plan(1.0 + r / rounds) for r in range(rounds + 1)]
    if kind == "plans_10":
        ten = [plan(1.0 + i / 10) for i in range(10)]
        return [ten[r % 10] for r in range(rounds + 1)]
    return [plan(1.0)] * (rounds + 1)


def scenario(kind: str, rounds: int, runs: int) -> dict:
    plans = _plans(kind, rounds)
    sampling = 0.1 if kind == "sampled" else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "budget.sqlite"
        with PrivacyBudget(1e9, DELTA, path=path) as budget:
            for r, plan in enumerate(plans[:rounds]):
                budget.charge(plan, round=r, session=b"\x01" * 32, sampling=sampling)
            spent = budget.accounting()

        def recompute():
            with PrivacyBudget(1e9, DELTA, path=path) as fresh:
                fresh.spent

        charge_times = []
        for i in range(runs):
            with PrivacyBudget(1e9, DELTA, path=path) as b:
                t = time.perf_counter()
                b.charge(plans[rounds], round=rounds + i, session=b"\x01" * 32, sampling=sampling)
                charge_times.append(time.perf_counter() - t)
        return {"ledger": kind, "rounds": rounds, "sampling": sampling, "epsilon": spent.epsilon,
                "accountant": spent.accountant, "recompute_seconds": median_seconds(recompute, runs),
                "charge_seconds": statistics.median(charge_times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [scenario(kind, args.rounds, args.runs) for kind in ("same", "plans_10", "distinct", "sampled")]
    meta = {"cpu": cpu_model(), "python": platform.python_version(), "delta": DELTA}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "budget.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Privacy budget: recomputing epsilon over a ledger ({meta['cpu']})", "",
             "| ledger | rounds | q | epsilon | accountant | recompute (s) | charge one more (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ledger']} | {r['rounds']} | {r['sampling']} | {r['epsilon']:.4g} | "
                     f"{r['accountant']} | {r['recompute_seconds']:.3f} | {r['charge_seconds']:.3f} |")
    (RESULTS / "budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
