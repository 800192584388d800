"""Poisoning attacks on federated training under secure aggregation (issue 12): what each defence
keeps of the model.

    python3 -m bench.poisoning [--rounds 20] [--clients 50] [--workers 2] [--out bench/results]

The task is examples/flower_training.py's, imported from it (not copied): scikit-learn's digits
split over the clients non-IID (Dirichlet 0.5), multinomial logistic regression in NumPy (650
parameters), local SGD seeded by (seed, round, client). Flower and Ray are left out: the rounds
run in process, every client in every round. In a round each client trains from the global model
and sends its model delta; the server releases a mean of the deltas and the global model moves by
it (FedAvg on deltas, server learning rate 1, the unweighted mean that DP-FedAvg releases). A round
that releases nothing leaves the model where it was.

Defences:
- ``fedavg``: the plain mean of the raw deltas: no secure aggregation, no clipping, no noise (the
  reference);
- ``checks only``: one secure sum, ``simulate_groups(groups=1, robust="none")``: deltas clipped to
  C, distributed discrete Gaussian noise (multiplier z), the aggregate's plausibility checks;
- ``g=5 none|median|trimmed|krum``: five group sums, each its own SecAgg+ instance with its own
  noise and checks, combined by ``secagg.robust``.

Attacks, mounted in every round by the same clients (``simulate_groups`` draws them from the seed;
fedavg uses the same ones):
- ``scale``: the client's honest delta x100, unclipped; ``noise``: the honest delta plus N(0, 10^2)
  per coordinate, unclipped; ``signflip``: the negated delta, clipped like an honest one (fedavg
  clips nothing). Under secagg these are secagg's own attack encoders applied to the honest delta;
- ``backdoor``: the attacker trains (the example's local SGD) on its own images plus a copy of
  each with a 2x2 patch at full brightness in the top-left corner, relabelled to the target class,
  and sends that delta boosted by n / (number of attackers) so that the mean carries the whole
  backdoored model (model replacement, Bagdasaryan et al. 2020); it skips clipping (secagg's
  ``unclipped`` attacker).
- ``backdoor-fit``: the same backdoor from an attacker that knows the defence: it scales its
  delta to the largest norm that keeps its group's sum inside the group's l2 check and its group's
  mean inside the combiner's deviation bound in about 99% of rounds (``fit_norm``, public
  parameters only), split evenly with the other attackers in its group (groups are public).
Attackers: one client, 5% and 20% of the clients, each rounded up (3 and 10 of 50).

Reported per (defence, attack, attackers): final accuracy on the clean test set; backdoor success
(the share of triggered test images of the other classes classified as the target); over the
attacked rounds, *detected* (every group holding an attacker was rejected by its checks or flagged
by the combiner's deviation check), *neutralised* (the released mean's L2 distance from the
honest clients' clipped mean is at most 1.5 times the median distance in the same defence's run
without attackers; for the backdoor, the model after the round puts fewer than 10% of the
triggered images in the target class, as a backdoor lives in a few coordinates that the L2
distance hardly sees) and the rounds that released nothing.
``--paired`` measures neutralisation as ``simulate_groups`` does instead, against the same round
run again with the attackers honest (the same masks, noise and groups): twice the secure rounds.
Without attack: each defence's accuracy against fedavg's, and its false alarms.

Every secure round's randomness (groups, masks, noise) comes from a fixed label per round, the
same under every defence and attack, so runs differ only in what they are meant to: the figures
reproduce. (A deployment draws them from the CSPRNG.)
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import write_results

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower_training.py"
DEFENCES = {  # name -> (groups, combiner); None: plain FedAvg
    "fedavg": None,
    "checks only": (1, "none"),
    "g=5 none": (5, "none"),
    "g=5 median": (5, "median"),
    "g=5 trimmed": (5, "trimmed"),
    "g=5 krum": (5, "krum"),
}
ATTACKS = ("scale", "signflip", "noise", "backdoor", "backdoor-fit")
BACKDOORS = ("backdoor", "backdoor-fit")
FRACTIONS = ("1", "5%", "20%")  # one client, then shares of the clients rounded up
SECAGG_ATTACK = {"scale": "scale", "signflip": "signflip", "noise": "noise", "backdoor": "unclipped",
                 "backdoor-fit": "unclipped"}
FIT_QUANTILE = 2.33  # backdoor-fit leaves room for the noise norm's 99% quantile
TRIGGER = (0, 1, 8, 9)  # pixels (0, 0), (0, 1), (1, 0), (1, 1) of the 8x8 image
NEUTRALISED = 1.5  # secagg.robust.NEUTRALISED, restated so fedavg workers need not import it
BACKDOOR_GOAL = 0.10  # issue 12: backdoor success below 10% with 5% of the clients malicious


@dataclass(frozen=True, kw_only=True)
class Settings:
    clients: int = 50
    rounds: int = 20
    seed: int = 0
    # L2 clip of each delta: near the median honest delta norm, which falls from 0.66 (round 1)
    # to 0.45 (round 20) in fedavg at the defaults; the table's header restates the measured values.
    clip: float = 0.5
    noise_multiplier: float = 1.0
    target: int = 7  # the backdoor's class


@functools.cache
def example():
    """examples/flower_training.py as a module: its data split, model and local training."""
    name = "flower_training"
    if name in sys.modules:  # already loaded (its own test registers it under this name)
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@functools.cache
def federation(clients: int, seed: int):
    ex = example()
    return ex.make_federation(ex.Settings(clients=clients, seed=seed))


def attacker_count(fraction: str, clients: int) -> int:
    return 1 if fraction == "1" else math.ceil(float(fraction.rstrip("%")) / 100 * clients)


def draw_attackers(seed: int, clients: int, count: int) -> list[int]:
    """The clients ``simulate_groups(seed=seed, malicious=count)`` makes attackers (checked
    against its report in every round)."""
    gen = np.random.default_rng([seed, 99])
    return sorted(int(c) for c in gen.choice(np.arange(1, clients + 1), size=count, replace=False))


def flatten(parameters) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parameters])


def unflatten(flat: np.ndarray) -> list[np.ndarray]:
    ex = example()
    w = ex.FEATURES * ex.CLASSES
    return [flat[:w].reshape(ex.FEATURES, ex.CLASSES), flat[w:].copy()]


def add_trigger(x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float64, copy=True)
    out[:, TRIGGER] = 1.0  # pixel intensities are 0..16 scaled to 0..1
    return out


def backdoor_success(parameters, x: np.ndarray, y: np.ndarray, target: int) -> float:
    """The share of triggered images of the other classes that the model puts in ``target``."""
    w, b = parameters
    other = y != target
    predicted = np.argmax(add_trigger(x[other]) @ w + b, axis=1)
    return float(np.mean(predicted == target))


def local_delta(flat: np.ndarray, x: np.ndarray, y: np.ndarray, settings: Settings, round_: int,
                client: int) -> np.ndarray:
    """Client ``client``'s (1-based) model delta: the example's local SGD from the global model,
    seeded by (seed, round, partition) as its Flower clients seed it."""
    ex = example()
    rng = np.random.default_rng([settings.seed, round_, client - 1])
    trained = ex.local_train(unflatten(flat), x, y, ex.Settings(clients=settings.clients, seed=settings.seed), rng)
    return flatten(trained) - flat


def backdoor_delta(flat, x, y, settings: Settings, round_: int, client: int, boost: float) -> np.ndarray:
    """The attacker's delta: trained on its images and their triggered copies labelled ``target``,
    boosted."""
    xs = np.concatenate([x, add_trigger(x)])
    ys = np.concatenate([y, np.full(len(y), settings.target)])
    return boost * local_delta(flat, xs, ys, settings, round_, client)


@dataclass
class Run:
    defence: str
    attack: str  # "none" for honest runs
    fraction: str  # "0" for honest runs
    attackers: list[int]
    accuracy: list[float] = field(default_factory=list)  # index 0: the initial model
    backdoor: list[float] = field(default_factory=list)
    released: list[bool] = field(default_factory=list)  # per round
    detected: list[bool] = field(default_factory=list)  # per attacked round
    neutralised: list[bool] = field(default_factory=list)  # filled in by run_grid
    neutralised_l2: list[bool] = field(default_factory=list)  # the same by L2 error, backdoor too
    inflation: list[float | None] = field(default_factory=list)  # --paired only
    error: list[float | None] = field(default_factory=list)  # ||released - honest clipped mean||
    alarms: list[bool] = field(default_factory=list)  # honest runs: a group rejected or flagged
    honest_norm_median: list[float] = field(default_factory=list)  # median raw honest delta norm
    epsilon_round: float | None = None  # one round, the largest group's (each client is in one sum)
    seconds: float = 0.0


def run(settings: Settings, defence: str, attack: str, fraction: str, paired: bool = False) -> Run:
    """Train ``settings.rounds`` rounds under one defence and one attack; see the module docstring."""
    from secagg.privacy.simulation import NOISE_STD, SCALE_FACTOR

    ex = example()
    fed = federation(settings.clients, settings.seed)
    n = settings.clients
    count = 0 if attack == "none" else attacker_count(fraction, n)
    attackers = draw_attackers(settings.seed, n, count)
    result = Run(defence, attack, fraction if count else "0", attackers)
    flat = flatten(ex.initial_parameters(settings.seed))

    def record():
        model = unflatten(flat)
        result.accuracy.append(ex.evaluate(model, fed.x_test, fed.y_test)[1])
        result.backdoor.append(backdoor_success(model, fed.x_test, fed.y_test, settings.target))

    start = time.perf_counter()
    record()
    for r in range(1, settings.rounds + 1):
        updates = {}
        for c in range(1, n + 1):
            x, y = fed.x_parts[c - 1], fed.y_parts[c - 1]
            if attack in BACKDOORS and c in attackers:
                updates[c] = backdoor_delta(flat, x, y, settings, r, c, boost=n / count)
                if attack == "backdoor-fit" and DEFENCES[defence] is not None:
                    share = fit_norm(settings, *DEFENCES[defence], dim=flat.size) / partners(
                        settings, defence, attackers, r, c)
                    updates[c] *= min(1.0, share / float(np.linalg.norm(updates[c])))
            else:
                updates[c] = local_delta(flat, x, y, settings, r, c)
        result.honest_norm_median.append(float(np.median(
            [np.linalg.norm(v) for c, v in updates.items() if c not in attackers])))
        if DEFENCES[defence] is None:
            sent = dict(updates)
            for c in attackers:
                if attack == "scale":
                    sent[c] = SCALE_FACTOR * updates[c]
                elif attack == "noise":
                    sent[c] = updates[c] + np.random.default_rng([settings.seed, r, c, 11]).normal(
                        0.0, NOISE_STD, updates[c].size)
                elif attack == "signflip":
                    sent[c] = -updates[c]
            mean = np.mean([sent[c] for c in range(1, n + 1)], axis=0)
        else:
            mean = _secure_round(settings, defence, attack, count, attackers, updates, r, result, paired)
        result.released.append(mean is not None)
        if mean is not None:
            flat = flat + mean
        record()
    result.seconds = time.perf_counter() - start
    return result


def _secure_round(settings, defence, attack, count, attackers, updates, r, result, paired):
    from secagg.robust import simulate_groups

    groups, combiner = DEFENCES[defence]
    report = simulate_groups(
        settings.clients, len(next(iter(updates.values()))), groups=groups, robust=combiner,
        seed=settings.seed, clip=settings.clip, noise_multiplier=settings.noise_multiplier,
        inputs=lambda c: updates[c], malicious=count, attack=SECAGG_ATTACK.get(attack),
        label=round_label(settings, r), baseline=paired and count > 0)
    if report.malicious != attackers:
        raise RuntimeError(f"simulate_groups chose attackers {report.malicious}, this bench {attackers}")
    result.epsilon_round = report.epsilon
    flagged = set(report.combined["flagged"]) if report.combined else set()
    result.error.append(report.error)
    if count:
        bad = [g for g in report.group_reports if g["malicious"]]
        result.detected.append(bool(bad) and all(g["rejected"] or str(g["group"]) in flagged for g in bad))
        result.inflation.append(report.error_inflation)
    else:
        result.alarms.append(any(g["rejected"] for g in report.group_reports) or bool(flagged))
    return report.mean


def group_plan(settings: Settings, size: int, dim: int):
    """The DP plan ``simulate_groups`` builds for a group of ``size`` clients (no dropout: it plans
    for 5%)."""
    from scipy.stats import binom

    from secagg.privacy import DPPlan
    from secagg.robust.simulate import GROUP_DROPOUT_TAIL

    m_min = max(1, size - int(binom.isf(GROUP_DROPOUT_TAIL, size, 0.05)))
    return DPPlan.create(dim, clip=settings.clip, noise_multiplier=settings.noise_multiplier,
                         min_clients=m_min, max_clients=size)


@functools.cache
def fit_norm(settings: Settings, groups: int, combiner: str, *, dim: int) -> float:
    """backdoor-fit's update norm: the largest that keeps its group's sum inside the group's l2
    check, and its group's mean inside the combiner's deviation bound, in about 99% of rounds,
    computed from public parameters only. It assumes the rest of its group adds noise and at most
    sqrt(m - 1) C of signal (honest updates in unrelated directions)."""
    from secagg.privacy.checks import l2_norm_bound

    size = settings.clients // groups
    plan = group_plan(settings, size, dim)
    p = 1e-6  # simulate_groups' false-alarm rate, for its checks and its combiner
    proxy = plan.error_proxy(size)
    noise = proxy * (dim + FIT_QUANTILE * math.sqrt(2 * dim))  # the noise norm^2, its 99% quantile
    room = l2_norm_bound(size * settings.clip, proxy, dim, p) ** 2 - noise - (size - 1) * settings.clip**2
    norm = math.sqrt(max(room, 0.0))
    if combiner != "none" and groups > 1:
        tau2 = 2 * proxy / size**2  # the deviation's noise: its group's and the centre's
        dev_room = (l2_norm_bound((1 + math.sqrt(groups)) * settings.clip, tau2, dim, p) ** 2
                    - tau2 * (dim + FIT_QUANTILE * math.sqrt(2 * dim)))
        norm = min(norm, size * math.sqrt(max(dev_room, 0.0)))
    return norm


def partners(settings: Settings, defence: str, attackers: list[int], round_: int, client: int) -> int:
    """How many attackers share ``client``'s group this round (itself included): colluding
    backdoor-fit attackers split their group's room. Groups are public (the round's seed)."""
    from secagg.robust.simulate import round_groups

    groups = DEFENCES[defence][0]
    members = round_groups(settings.clients, groups, round_label(settings, round_))
    group = next(g for g in members if client in g)
    return sum(a in group for a in attackers)


def round_label(settings: Settings, round_: int) -> str:
    return f"bench.poisoning/{settings.seed}/{round_}"


def fit_summary(settings: Settings) -> str:
    dim = sum(int(np.prod(p.shape)) for p in example().initial_parameters(settings.seed))
    return ", ".join(f"{d} {fit_norm(settings, *spec, dim=dim):.1f}" for d, spec in DEFENCES.items()
                     if spec is not None) + f" per group, against C = {settings.clip}"


def composed_epsilon(settings: Settings, groups: int, epsilon_round: float, delta: float = 1e-6) -> float:
    """epsilon after ``settings.rounds`` rounds (every client in every round), from the plans
    ``simulate_groups`` builds for groups of this size; checked against its one-round figure."""
    dim = sum(int(np.prod(p.shape)) for p in example().initial_parameters(settings.seed))
    best_one = best = 0.0
    for size in {settings.clients // groups, -(-settings.clients // groups)}:
        plan = group_plan(settings, size, dim)
        best_one = max(best_one, plan.epsilon(rounds=1, delta=delta))
        best = max(best, plan.epsilon(rounds=settings.rounds, delta=delta))
    if not math.isclose(best_one, epsilon_round, rel_tol=1e-6):
        raise RuntimeError(f"the plan rebuilt here gives epsilon {best_one} for one round, simulate_groups "
                           f"reported {epsilon_round}: they are not the same plan")
    return best


# ---------------------------------------------------------------- the grid and its report


def jobs(paired: bool = False) -> list[tuple[str, str, str]]:
    """(defence, attack, fraction) for every run, the slowest first (grouped rounds cost more;
    with ``paired``, attacked rounds run twice)."""
    out = [(d, a, f) for d in DEFENCES for a in ATTACKS for f in FRACTIONS]
    out += [(d, "none", "0") for d in DEFENCES]

    def cost(job):
        d, a, _ = job
        spec = DEFENCES[d]
        return 0 if spec is None else (2 if paired and a != "none" else 1) * (1.5 if spec[0] > 1 else 1)

    return sorted(out, key=cost, reverse=True)


def _job(args) -> dict:
    settings, defence, attack, fraction, paired = args
    return asdict(run(settings, defence, attack, fraction, paired))


def run_grid(settings: Settings, workers: int, paired: bool = False) -> list[dict]:
    todo = jobs(paired)
    rows = []
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_job, (settings, *job, paired)) for job in todo]
        for i, future in enumerate(as_completed(futures), 1):
            row = future.result()
            rows.append(row)
            print(f"[{i}/{len(todo)}] {row['defence']}, {row['attack']}, {row['fraction']}: accuracy "
                  f"{row['accuracy'][-1]:.3f}, backdoor {row['backdoor'][-1]:.3f} ({row['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    order = {job: i for i, job in enumerate((d, a, f) for d in DEFENCES for a in ("none", *ATTACKS)
                                            for f in ("0", *FRACTIONS))}
    rows = sorted(rows, key=lambda r: order[(r["defence"], r["attack"], r["fraction"])])
    for row in rows:
        row["neutralised"] = neutralised(row, rows, paired)
        row["neutralised_l2"] = neutralised_l2(row, rows, paired) if row["detected"] else []
    return rows


def neutralised(row: dict, rows: list[dict], paired: bool) -> list[bool]:
    """Per attacked round of a secure run: whether the attack was neutralised (see the module
    docstring)."""
    if not row["detected"]:
        return []
    if row["attack"] in BACKDOORS:
        return [b < BACKDOOR_GOAL for b in row["backdoor"][1:]]
    return neutralised_l2(row, rows, paired)


def neutralised_l2(row: dict, rows: list[dict], paired: bool) -> list[bool]:
    """Per attacked round: the released mean as close to the honest clients' mean as an honest
    round gets (inflation <= 1.5); a round that released nothing was not (it may be detected)."""
    if paired:
        return [x is not None and x <= NEUTRALISED for x in row["inflation"]]
    honest = next(r for r in rows if r["defence"] == row["defence"] and r["attack"] == "none")
    typical = float(np.median([e for e in honest["error"] if e is not None]))
    return [e is not None and e <= NEUTRALISED * typical for e in row["error"]]


def summarise(row: dict) -> dict:
    attacked = len(row["detected"])
    either = [d or nz for d, nz in zip(row["detected"], row["neutralised"])]
    return {
        "defence": row["defence"], "attack": row["attack"], "fraction": row["fraction"],
        "attackers": len(row["attackers"]), "final_accuracy": row["accuracy"][-1],
        "backdoor_success": row["backdoor"][-1],
        "detected": sum(row["detected"]) / attacked if attacked else None,
        "neutralised": sum(row["neutralised"]) / attacked if attacked else None,
        "detected_or_neutralised": sum(either) / attacked if attacked else None,
        "neutralised_l2": sum(row["neutralised_l2"]) / attacked if attacked else None,
        "rounds_released": sum(row["released"]), "rounds": len(row["released"]),
        "false_alarm_rounds": sum(row["alarms"]) if row["attack"] == "none" and row["alarms"] else None,
        "seconds": row["seconds"],
    }


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def report_lines(settings: Settings, rows: list[dict], summary: list[dict], epsilon: dict, seconds: float,
                 workers: int, command: str, paired: bool = False) -> list[str]:
    n = settings.clients
    counts = ", ".join(f"{f} = {attacker_count(f, n)}" for f in FRACTIONS)
    plain = next(r for r in rows if r["defence"] == "fedavg" and r["attack"] == "none")
    norms = plain["honest_norm_median"]
    lines = [
        f"# Poisoning attacks on federated training under secure aggregation (digits, {n} clients, "
        f"{settings.rounds} rounds)", "",
        f"Command: `{command}` ({seconds / 60:.1f} min wall on {os.cpu_count()} cores, {workers} workers; "
        "the machine is shared).", "",
        f"examples/flower_training.py's task and model (Dirichlet 0.5 split, logistic regression, 650 "
        f"parameters, its local SGD), every client every round, the global model moved by the released "
        f"mean of the deltas. Clip C = {settings.clip}: the median honest delta norm in fedavg is "
        f"{norms[0]:.2f} in round 1 and {norms[-1]:.2f} in round {len(norms)} (median over rounds "
        f"{np.median(norms):.2f}). DP noise multiplier z = {settings.noise_multiplier}: epsilon at delta "
        f"1e-6 is {epsilon['checks only']:.1f} (checks only) and {epsilon['g=5']:.1f} (g = 5) after "
        f"{settings.rounds} rounds (each client is in one sum per round, and every sum carries the noise "
        f"z C its own guarantee needs, so grouping costs accuracy, not epsilon). No dropout. Attackers: {counts} "
        f"of {n} clients, the same in every round; backdoor target class {settings.target}, trigger the "
        f"top-left 2x2 pixels at full brightness, boost n / attackers (backdoor-fit: scaled to the "
        f"norm its defence's checks let through, {fit_summary(settings)}).", "",
        "## Under attack", "",
        "Detected: every group holding an attacker was rejected by its checks or flagged by the "
        "combiner. Neutralised: " + (
            "error inflation <= 1.5 against the same round rerun with the attackers honest (--paired)"
            if paired else "the released mean's L2 distance from the honest clients' clipped mean is at "
            "most 1.5x the median distance in the same defence's honest run") + "; for the backdoor, "
        "the model after the round puts under 10% of the triggered images in the target class." +
        " Released: rounds in which the model moved (a round whose every sum is rejected leaves it "
        "unchanged). Each run is one training run of "
        f"{settings.rounds} rounds, all attacked.", "",
        "| defence | attack | attackers | final accuracy | backdoor success | detected | neutralised "
        "| detected or neutralised | rounds released |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        if s["attack"] == "none":
            continue
        bd = f"{s['backdoor_success']:.1%}" if s["attack"] in BACKDOORS else "-"
        lines.append(f"| {s['defence']} | {s['attack']} | {s['attackers']} ({s['fraction']}) | "
                     f"{s['final_accuracy']:.3f} | {bd} | {_pct(s['detected'])} | {_pct(s['neutralised'])} | "
                     f"{_pct(s['detected_or_neutralised'])} | {s['rounds_released']}/{s['rounds']} |")
    l2 = ", ".join(f"{s['defence']} {s['attack']} ({s['attackers']}) {_pct(s['neutralised_l2'])}" for s in summary
                   if s["attack"] in BACKDOORS and s["neutralised_l2"] is not None)
    lines += ["", f"By the L2 measure the backdoor rounds would count as neutralised in: {l2}."]
    honest = {s["defence"]: s for s in summary if s["attack"] == "none"}
    base = honest["fedavg"]["final_accuracy"]
    lines += ["", "## Honest rounds: the accuracy cost of each defence", "",
              "Backdoor success here is the trigger's effect on a model nobody attacked (the floor).", "",
              "| defence | final accuracy | vs fedavg | mean accuracy, last 5 rounds | backdoor success "
              "(no attack) | rounds with a false alarm | epsilon |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for d, s in honest.items():
        row = next(r for r in rows if r["defence"] == d and r["attack"] == "none")
        eps = "-" if DEFENCES[d] is None else f"{epsilon['checks only' if DEFENCES[d][0] == 1 else 'g=5']:.1f}"
        alarms = "-" if s["false_alarm_rounds"] is None else f"{s['false_alarm_rounds']}/{s['rounds']}"
        lines.append(f"| {d} | {s['final_accuracy']:.3f} | {s['final_accuracy'] - base:+.3f} | "
                     f"{np.mean(row['accuracy'][-5:]):.3f} | {s['backdoor_success']:.1%} | {alarms} | {eps} |")
    fives = [s for s in summary if s["attack"] in BACKDOORS and s["fraction"] == "5%"]
    lines += ["", f"## Goal: backdoor success below 10% with 5% of the clients malicious "
              f"({attacker_count('5%', n)} of {n})", "",
              "| defence | attack | backdoor success | below 10% | final accuracy |", "|---|---|---:|:---:|---:|"]
    for s in fives:
        lines.append(f"| {s['defence']} | {s['attack']} | {s['backdoor_success']:.1%} | "
                     f"{'yes' if s['backdoor_success'] < 0.10 else 'no'} | {s['final_accuracy']:.3f} |")
    lines += ["", "Wall seconds per run (one process, {} rounds): ".format(settings.rounds) + ", ".join(
        f"{d} {np.median([s['seconds'] for s in summary if s['defence'] == d]):.0f} s" for d in DEFENCES)
        + " (medians over its runs" + ("; attacked secure runs also run each round with the attackers "
                                        "honest" if paired else "") + ")."]
    return lines


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(DEFENCES)
    x = np.arange(len(names))
    reference = next(s["final_accuracy"] for s in summary if s["defence"] == "fedavg" and s["attack"] == "none")
    fig, axes = plt.subplots(2, 4, figsize=(17, 7), sharey=True)
    panels = [("none", "final_accuracy", "no attack: final accuracy")] + [
        (a, "final_accuracy", f"{a}: final accuracy") for a in ATTACKS] + [
        (a, "backdoor_success", f"{a}: success rate") for a in BACKDOORS]
    assert len(panels) == axes.size, "one panel per axis"
    for ax, (attack, key, title) in zip(axes.flat, panels):
        fractions = ("0",) if attack == "none" else FRACTIONS
        width = 0.8 / len(fractions)
        for i, f in enumerate(fractions):
            values = [next(s[key] for s in summary if s["defence"] == d and s["attack"] == attack
                           and s["fraction"] == f) for d in names]
            k = next(s["attackers"] for s in summary if s["fraction"] == f) if f != "0" else 0
            label = "no attackers" if f == "0" else f"{k} attacker{'s' if k > 1 else ''} ({f})"
            ax.bar(x + (i - (len(fractions) - 1) / 2) * width, values, width, label=label)
        if key == "backdoor_success":
            ax.axhline(BACKDOOR_GOAL, color="k", linestyle=":", linewidth=1, label="goal (10%)")
        else:
            ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label="fedavg, no attack")
        ax.set_title(title)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("share of the test set")
    axes[1, 0].set_ylabel("share of the test set")
    handles, labels = axes[0, 1].get_legend_handles_labels()
    goal = axes[1, -1].get_legend_handles_labels()
    fig.legend(handles + goal[0][:1], labels + goal[1][:1], loc="lower center", ncol=5, fontsize=9)
    fig.suptitle("Poisoning under secure aggregation: digits, logistic regression")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--clip", type=float, default=defaults.clip)
    parser.add_argument("--noise-multiplier", type=float, default=defaults.noise_multiplier)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--paired", action="store_true",
                        help="neutralisation against each round rerun with the attackers honest (2x the time)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    settings = Settings(clients=args.clients, rounds=args.rounds, seed=args.seed, clip=args.clip,
                        noise_multiplier=args.noise_multiplier)
    command = "python3 -m bench.poisoning " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    rows = run_grid(settings, args.workers, args.paired)
    seconds = time.perf_counter() - started
    summary = [summarise(r) for r in rows]
    first = {DEFENCES[r["defence"]][0]: r["epsilon_round"] for r in rows if DEFENCES[r["defence"]]}
    epsilon = {"checks only": composed_epsilon(settings, 1, first[1]),
               "g=5": composed_epsilon(settings, 5, first[5])}
    lines = report_lines(settings, rows, summary, epsilon, seconds, args.workers, command.strip(), args.paired)
    write_results(args.out, "poisoning", {"settings": asdict(settings), "epsilon": epsilon,
                                          "seconds": seconds, "summary": summary, "runs": rows}, lines)
    plot(summary, Path(args.out) / "poisoning.png")
    print(f"\nwrote {args.out}/poisoning.json, .md, .png")


if __name__ == "__main__":
    main()
