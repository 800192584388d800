"""The ``secagg`` command line: ``simulate`` runs a round in process, ``params`` picks (k, t);
``ca init``, ``enroll`` and ``revoke`` manage identities (``secagg.identity.cli``);
``broker-config`` writes a mosquitto deployment (``secagg.transport.broker``).

Exit codes: 0 success; 2 a usage, configuration or input error (the cause is printed); 3 the
round aborted (only a real ``RoundAborted``: the reason is printed, and with ``--json`` it is in
the object); 4 the sum was not exact (a bug: please report); 5 a plausibility check with policy
``reject`` refused the aggregate.
"""

from __future__ import annotations

import argparse
import math
import json
import os
import sys

from secagg import model_signing, telemetry
from secagg.errors import ConfigurationError, RoundAborted, SecAggError
from secagg.identity import cli as identity_cli
from secagg.params import AdversaryClass, find_parameters, full_graph_parameters
from secagg.simulate import DROP_STAGE_CHOICES, simulate
from secagg.transport import broker, mqtt_cli

EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INEXACT = 4
EXIT_REJECTED = 5


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
                     help="where dropped clients go silent (mixed: a random stage each; consistency: "
                          "from the ConsistencyCheck on, which without --authenticated is unmask)")
    sim.add_argument("--bits", default=None,
                     help="ring Z_2^bits, 1..62 (default 32; with --dp: 'auto', the smallest safe)")
    sim.add_argument("--value-range", type=float, default=1.0, help="inputs lie in [-R, R]")
    sim.add_argument("--levels", type=int, default=None,
                     help="quantisation levels per client (default: the finest safe for n)")
    sim.add_argument("--adversarial-rate", type=_rate, default=0.05)
    sim.add_argument("--dropout-rate", type=_rate, default=None,
                     help="dropout rate the graph is planned for (default max(dropout, 0.05))")
    _adversary_flags(sim, "default: malicious with --authenticated, else semi-honest")
    sim.add_argument("--full-graph", action="store_true", help="original SecAgg: degree n - 1")
    sim.add_argument("--threshold", type=int, default=None, help="Shamir threshold (full graph)")
    sim.add_argument("--seed", type=int, default=None,
                     help="seed for the test data and the dropout choice (never for secrets)")
    sim.add_argument("--authenticated", action="store_true",
                     help="signed adverts checked against a registry, and a ConsistencyCheck round")
    sim.add_argument("--workers", type=int, default=None,
                     help="workers the server unmasks on (default: every core)")
    sim.add_argument("--unmasker", choices=["process", "thread", "ray"], default="process",
                     help="where the shards run: a process pool over shared memory (default; it also "
                          "derives the dropped pairs' seeds), threads, or Ray tasks (secagg[ray])")
    sim.add_argument("--ray-address", default=None, help="a Ray cluster for --unmasker ray (default: local)")
    sim.add_argument("--client-workers", type=int, default=None,
                     help="processes the simulated clients run in (0: this one; default: one per core "
                          "from 5,000 clients on, for rounds without --dp or --authenticated)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--no-progress", action="store_true")
    telemetry.add_arguments(sim)  # the round runs, then ends: a scrape needs --metrics-hold
    dp = sim.add_argument_group("privacy layer (distributed DP and checks on the aggregate)")
    dp.add_argument("--dp", action="store_true", help="clip, round and noise on the clients")
    # DP options default to None so that giving one without --dp is caught, never silently ignored.
    dp.add_argument("--clip", type=float, default=None, help="L2 clip norm C (default 1)")
    dp.add_argument("--noise-multiplier", type=float, default=None,
                    help="central noise std / C (default 1)")
    dp.add_argument("--mechanism", choices=["ddgauss", "skellam"], default=None)
    dp.add_argument("--min-clients", type=int, default=None,
                    help="m_min: the guarantee holds down to this many contributors "
                         "(default: n minus the planned dropouts)")
    dp.add_argument("--delta", type=float, default=None, help="(default 1e-6)")
    dp.add_argument("--no-rotation", action="store_true", help="skip the randomized Hadamard rotation")
    dp.add_argument("--flag-weight", type=float, default=None,
                    help="weight w of the clipped-count coordinate, a fraction of C (default 0.1; "
                         "0: no clipped count)")
    dp.add_argument("--groups", type=int, default=None,
                    help="split the clients into G groups by the round's public seed; each group is "
                         "its own secure sum with its own noise (poisoning defence; needs --dp)")
    dp.add_argument("--robust", choices=["none", "median", "trimmed", "krum"], default=None,
                    help="how the server combines the group means (default none: their pooled mean)")
    dp.add_argument("--malicious", type=int, default=None, help="clients that mount --attack")
    dp.add_argument("--attack", choices=["scale", "noise", "signflip", "unclipped"], default=None,
                    help="scale: x100, unclipped; noise: + N(0, 10^2), unclipped; signflip: the negated "
                         "update, clipped; unclipped: the update itself, never clipped")
    dp.add_argument("--policy", choices=["reject", "warn"], default=None,
                    help="what a failed check does to the aggregate (default reject)")
    dp.add_argument("--false-alarm", type=float, default=None,
                    help="per check, for an honest round (default 1e-6)")

    priv = sub.add_parser("privacy", help="epsilon for a noise level, or the noise for an epsilon")
    priv.add_argument("--clip", type=float, required=True, help="L2 clip norm C")
    priv.add_argument("--noise-multiplier", type=float, default=None, help="central noise std / C")
    priv.add_argument("--target-epsilon", type=float, default=None,
                      help="find the smallest noise multiplier that reaches this epsilon")
    priv.add_argument("--clients", type=int, required=True,
                      help="m_min: contributors the guarantee must hold for")
    priv.add_argument("--max-clients", type=int, default=None, help="n: the ring must hold this many (default m_min)")
    priv.add_argument("--rounds", type=int, default=1)
    priv.add_argument("--sampling", type=float, default=1.0, help="client sampling rate q")
    priv.add_argument("--delta", type=float, default=1e-6)
    priv.add_argument("--dim", type=int, default=1000, help="update length (for the bit width)")
    priv.add_argument("--bits", default="auto", help="'auto' or a bit width")
    priv.add_argument("--mechanism", choices=["ddgauss", "skellam"], default="ddgauss")
    priv.add_argument("--no-rotation", action="store_true")
    priv.add_argument("--flag-weight", type=float, default=None,
                      help="weight w of the clipped-count coordinate, a fraction of C (default 0.1; "
                           "0: no clipped count)")
    priv.add_argument("--accountant", choices=["pld", "rdp"], default="pld",
                      help="pld: min(PLD, RDP) (default); rdp: the Renyi bound alone")
    priv.add_argument("--json", action="store_true")

    par = sub.add_parser("params", help="choose the graph degree k and threshold t")
    par.add_argument("--clients", type=int, required=True)
    par.add_argument("--adversarial-rate", type=float, default=0.05)
    par.add_argument("--dropout-rate", type=float, default=0.1)
    _adversary_flags(par, "default: semi-honest")
    par.add_argument("--full-graph", action="store_true")
    par.add_argument("--threshold", type=int, default=None, help="required with --full-graph")
    par.add_argument("--json", action="store_true")
    identity_cli.add_subcommands(sub)
    model_signing.add_subcommands(sub)
    broker.add_subcommands(sub)
    mqtt_cli.add_subcommands(sub)
    return parser


def _adversary_flags(parser, default: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--adversary", choices=[a.value for a in AdversaryClass], default=None,
                       help=f"the server (k, t) are planned against ({default})")
    group.add_argument("--semi-malicious", dest="adversary", action="store_const",
                       const=AdversaryClass.SEMI_MALICIOUS.value, help="short for --adversary semi-malicious")


def _adversary(args) -> AdversaryClass | None:
    """The class asked for; None lets simulate choose (malicious when authenticated)."""
    return None if args.adversary is None else AdversaryClass(args.adversary)


def _bits(text, default):
    if text is None:
        return default
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"--bits must be 'auto' or an integer, got {text!r}") from None


DP_DEFAULTS = {"clip": 1.0, "noise_multiplier": 1.0, "mechanism": "ddgauss", "min_clients": None,
               "delta": 1e-6, "no_rotation": False, "malicious": 0, "attack": None, "policy": "reject",
               "false_alarm": 1e-6, "flag_weight": None, "groups": None, "robust": None}


def _dp_options(args) -> None:
    """Refuse privacy-layer options without --dp (a silent non-DP round is the worst outcome),
    then fill in their defaults."""
    given = [name for name, default in DP_DEFAULTS.items() if getattr(args, name) not in (None, False)]
    if given and not args.dp:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigurationError(f"privacy-layer options need --dp: {flags} given without it (the "
                                 "round would silently not be private)")
    for name, default in DP_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def cmd_simulate(args) -> int:
    from secagg.protocol.unmask import make_unmasker

    privacy = checks = None
    _dp_options(args)
    if args.groups is not None or args.robust is not None:
        if args.client_workers:
            raise ConfigurationError("--client-workers: grouped rounds (--groups, --robust) run their "
                                     "clients in process; leave --client-workers out")
        return _simulate_groups(args)
    bits = _bits(args.bits, "auto" if args.dp else 32)
    if args.dp:
        from secagg.privacy import DPPlan, PlausibilityChecks

        planned = args.dropout_rate if args.dropout_rate is not None else max(args.dropout, 0.05)
        m_min = args.min_clients or max(1, args.clients - math.floor(planned * args.clients))
        privacy = DPPlan.create(
            args.dim, clip=args.clip, noise_multiplier=args.noise_multiplier, min_clients=m_min,
            max_clients=args.clients, mechanism=args.mechanism, bits=bits,
            rotate=not args.no_rotation, **_flag_weight(args),
        )
        checks = PlausibilityChecks(
            privacy, false_alarm=args.false_alarm,
            policies={name: args.policy for name in ("l2_norm", "linf", "wrap", "clipped_count")},
        )
        bits = privacy.bits
    elif bits == "auto":
        raise ConfigurationError("--bits auto picks the width for the privacy layer: add --dp, or give a width")
    metrics = telemetry.from_arguments(args, sys.stderr)
    unmasker = make_unmasker(args.workers, kind=args.unmasker, ray_address=args.ray_address)
    try:
        report = simulate(
            args.clients, args.dim, dropout=args.dropout, drop_stage=args.drop_stage, bits=bits,
            value_range=args.value_range, levels=args.levels, adversarial_rate=args.adversarial_rate,
            dropout_rate=args.dropout_rate, adversary=_adversary(args), full_graph=args.full_graph,
            threshold=args.threshold, seed=args.seed,
            progress=not (args.json or args.no_progress) and sys.stderr.isatty(),
            privacy=privacy, checks=checks, malicious=args.malicious, attack=args.attack,
            delta=args.delta, authenticated=args.authenticated, on_round=telemetry.simulate_observer(metrics),
            unmasker=unmasker, client_workers=args.client_workers,
        )
    finally:
        if hasattr(unmasker, "close"):
            unmasker.close()
    telemetry.hold_and_stop(metrics, args.metrics_hold, sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(report.summary())
    if report.aborted:
        return EXIT_ABORTED
    if not report.exact:
        return EXIT_INEXACT
    return EXIT_REJECTED if report.rejected else 0


def _simulate_groups(args) -> int:
    from secagg.robust import simulate_groups

    groups, robust = args.groups or 1, args.robust or "none"
    if robust != "none" and groups < 3:
        raise ConfigurationError(f"--robust {robust} combines group means: give --groups 3 or more")
    for flag, given in (("--authenticated", args.authenticated), ("--full-graph", args.full_graph),
                        ("--min-clients", args.min_clients)):
        if given:
            raise ConfigurationError(f"{flag} is not supported with --groups (each group plans its own graph "
                                     "and m_min)")
    metrics = telemetry.from_arguments(args, sys.stderr)
    report = simulate_groups(
        args.clients, args.dim, groups=groups, robust=robust, dropout=args.dropout,
        drop_stage=args.drop_stage, seed=args.seed, clip=args.clip, noise_multiplier=args.noise_multiplier,
        mechanism=args.mechanism, dropout_rate=args.dropout_rate, adversarial_rate=args.adversarial_rate,
        malicious=args.malicious, attack=args.attack, delta=args.delta, false_alarm=args.false_alarm,
        rotate=not args.no_rotation, telemetry=metrics,
    )
    telemetry.hold_and_stop(metrics, args.metrics_hold, sys.stderr)
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    if report.aborted:
        return EXIT_ABORTED
    return 0 if report.exact else EXIT_INEXACT


def _flag_weight(args) -> dict:
    return {} if args.flag_weight is None else {"flag_weight": args.flag_weight}


def _finite(x: float) -> float | None:
    """JSON has no infinity: an unbounded epsilon (no noise) is null."""
    return x if math.isfinite(x) else None


def cmd_privacy(args) -> int:
    from secagg.privacy import DPPlan, gaussian_epsilon
    from secagg.privacy.accounting import calibrate

    if (args.noise_multiplier is None) == (args.target_epsilon is None):
        raise ConfigurationError("give exactly one of --noise-multiplier and --target-epsilon")
    if args.dim < 1:
        raise ConfigurationError(f"--dim must be at least 1, got {args.dim}")

    def plan_for(z):
        return DPPlan.create(
            args.dim, clip=args.clip, noise_multiplier=z, min_clients=args.clients,
            max_clients=args.max_clients or args.clients, mechanism=args.mechanism,
            bits=_bits(args.bits, "auto"), rotate=not args.no_rotation, **_flag_weight(args),
        )

    def accounting(z):
        return plan_for(z).accounting(rounds=args.rounds, sampling=args.sampling, delta=args.delta,
                                      accountant=args.accountant)

    if args.noise_multiplier is not None:
        z = args.noise_multiplier
    else:
        z = calibrate(lambda z: accounting(z).epsilon, args.target_epsilon)
    plan, acc = plan_for(z), accounting(z)
    baseline = (gaussian_epsilon(z, rounds=args.rounds, sampling=args.sampling, delta=args.delta,
                                 accountant=args.accountant) if z > 0 else math.inf)
    out = {
        "mechanism": plan.mechanism.value, "clip": plan.clip, "noise_multiplier": z,
        "min_clients": plan.min_clients, "max_clients": plan.max_clients, "rounds": args.rounds,
        "sampling": args.sampling, "delta": args.delta, "epsilon": _finite(acc.epsilon),
        "accountant": acc.accountant, "rdp_epsilon": _finite(acc.rdp_epsilon),
        "gaussian_epsilon": _finite(baseline), "gaussian_accountant": args.accountant,
        "dim": args.dim, "bits": plan.bits, "gamma": plan.gamma, "local_noise_std": plan.local_variance**0.5,
        "flag_weight": plan.flag_weight, "target_epsilon": args.target_epsilon,
    }
    if args.json:
        print(json.dumps(out))
    else:
        head = (f"noise multiplier {z:.4g} reaches epsilon {acc.epsilon:.4g}" if args.target_epsilon
                else f"epsilon {acc.epsilon:.4g}")
        print(f"{head} at delta {args.delta} after {args.rounds} rounds (sampling {args.sampling}), "
              f"{plan.mechanism.value}, clip {plan.clip}, m_min {plan.min_clients}; accountant "
              f"{acc.accountant} (RDP alone: epsilon {acc.rdp_epsilon:.4g})")
        print(f"  continuous Gaussian ({args.accountant.upper()}) at the same noise multiplier: "
              f"epsilon {baseline:.4g}")
        count = ("no clipped count (flag weight 0)" if not plan.counts_clipping
                 else f"clipped-count flag weight {plan.flag_weight:g}")
        print(f"  for dim {args.dim}: {plan.bits} bits per coordinate, gamma {plan.gamma:.3g}, "
              f"per-client noise std {out['local_noise_std']:.4g} (integer units), {count}")
    return 0


def cmd_params(args) -> int:
    if args.full_graph:
        if args.threshold is None:
            raise ConfigurationError("--full-graph needs --threshold")
        params = full_graph_parameters(args.clients, args.threshold, args.adversarial_rate,
                                       _adversary(args) or AdversaryClass.SEMI_HONEST)
    else:
        params = find_parameters(args.clients, args.adversarial_rate, args.dropout_rate,
                                 _adversary(args) or AdversaryClass.SEMI_HONEST)
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
        if hasattr(args, "handler"):  # subcommands registered by other modules
            return args.handler(args)
        return {"simulate": cmd_simulate, "params": cmd_params, "privacy": cmd_privacy,
                **identity_cli.COMMANDS}[args.command](args)
    except ConfigurationError as exc:
        print(f"secagg {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RoundAborted as exc:
        print(f"secagg {args.command}: aborted: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    except SecAggError as exc:
        print(f"secagg {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`secagg ... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
