"""The ``secagg`` command line: ``simulate`` runs a round in process, ``params`` picks (k, t).

Exit codes: 0 success; 2 a usage or configuration error; 3 the round aborted (the reason is
printed, and with ``--json`` it is in the object); 4 the sum was not exact (a bug: please report).
"""

from __future__ import annotations

import argparse
import json
import sys

from secagg.errors import ConfigurationError, SecAggError
from secagg.params import AdversaryClass, find_parameters, full_graph_parameters
from secagg.simulate import DROP_STAGE_CHOICES, simulate

EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INEXACT = 4


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secagg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run one SecAgg+ round in process")
    sim.add_argument("--clients", type=_positive, required=True, help="number of clients n")
    sim.add_argument("--dim", type=_positive, required=True, help="vector length d")
    sim.add_argument("--dropout", type=_rate, default=0.0, help="fraction of clients that drop")
    sim.add_argument("--drop-stage", choices=DROP_STAGE_CHOICES, default="masked",
                     help="where dropped clients go silent (mixed: a random stage each)")
    sim.add_argument("--bits", type=int, default=32, help="ring Z_2^bits, 1..62 (default 32)")
    sim.add_argument("--value-range", type=float, default=1.0, help="inputs lie in [-R, R]")
    sim.add_argument("--levels", type=int, default=None,
                     help="quantisation levels per client (default: the finest safe for n)")
    sim.add_argument("--adversarial-rate", type=_rate, default=0.05)
    sim.add_argument("--dropout-rate", type=_rate, default=None,
                     help="dropout rate the graph is planned for (default max(dropout, 0.05))")
    sim.add_argument("--semi-malicious", action="store_true", help="plan (k, t) for a semi-malicious server")
    sim.add_argument("--full-graph", action="store_true", help="original SecAgg: degree n - 1")
    sim.add_argument("--threshold", type=int, default=None, help="Shamir threshold (full graph)")
    sim.add_argument("--seed", type=int, default=None,
                     help="seed for the test data and the dropout choice (never for secrets)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--no-progress", action="store_true")

    par = sub.add_parser("params", help="choose the graph degree k and threshold t")
    par.add_argument("--clients", type=int, required=True)
    par.add_argument("--adversarial-rate", type=float, default=0.05)
    par.add_argument("--dropout-rate", type=float, default=0.1)
    par.add_argument("--semi-malicious", action="store_true")
    par.add_argument("--full-graph", action="store_true")
    par.add_argument("--threshold", type=int, default=None, help="required with --full-graph")
    par.add_argument("--json", action="store_true")
    return parser


def _adversary(args) -> AdversaryClass:
    return AdversaryClass.SEMI_MALICIOUS if args.semi_malicious else AdversaryClass.SEMI_HONEST


def cmd_simulate(args) -> int:
    report = simulate(
        args.clients, args.dim, dropout=args.dropout, drop_stage=args.drop_stage, bits=args.bits,
        value_range=args.value_range, levels=args.levels, adversarial_rate=args.adversarial_rate,
        dropout_rate=args.dropout_rate, adversary=_adversary(args), full_graph=args.full_graph,
        threshold=args.threshold, seed=args.seed,
        progress=not (args.json or args.no_progress) and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(report.summary())
    if report.aborted:
        return EXIT_ABORTED
    return 0 if report.exact else EXIT_INEXACT


def cmd_params(args) -> int:
    if args.full_graph:
        if args.threshold is None:
            raise ConfigurationError("--full-graph needs --threshold")
        params = full_graph_parameters(args.clients, args.threshold, args.adversarial_rate, _adversary(args))
    else:
        params = find_parameters(args.clients, args.adversarial_rate, args.dropout_rate, _adversary(args))
    if args.json:
        print(json.dumps(params.as_dict()))
    else:
        kind = "full graph" if params.full_graph else "Harary graph"
        print(
            f"{kind}: degree k = {params.degree}, threshold t = {params.threshold} for "
            f"n = {params.clients}, adversarial rate {params.adversarial_rate}, dropout rate "
            f"{params.dropout_rate:.4g}, {params.adversary.value} server"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"simulate": cmd_simulate, "params": cmd_params}[args.command](args)
    except ConfigurationError as exc:
        print(f"secagg {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SecAggError as exc:
        print(f"secagg {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ABORTED


if __name__ == "__main__":
    sys.exit(main())
