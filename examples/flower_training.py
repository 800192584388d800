"""A real federated training run in a Flower simulation, with and without secure aggregation.

    python3 examples/flower_training.py --clients 50 --rounds 20 --modes fedavg,secagg,secagg-dp --out DIR

Multinomial logistic regression, written in NumPy, learns scikit-learn's digits (8x8 images, 10
classes; shipped with scikit-learn, nothing is downloaded). A stratified 25% of the images is held
out as the central test set; the rest is split across the clients non-IID, each class spread over
the clients by a Dirichlet(alpha) draw (alpha = 0.5 by default, redrawn until every client holds
at least ``min_samples`` images), from a fixed seed. Every mode trains from the same initial model
on the same split, samples every client in every round, and each client's local SGD shuffles with
a generator seeded by (seed, round, client), so two modes differ only in how the server learns
the clients' models:

- ``fedavg``: plain Flower, the server sees each client's model (Flower's default fit workflow).
- ``flower-secaggplus``: Flower's own ``SecAggPlusWorkflow`` and ``secaggplus_mod``.
- ``secagg``: secagg's drop-in workflow and mod (``secagg.flower``), the same weighted mean
  through secagg's SecAgg+ rounds; only quantisation separates it from ``fedavg``.
- ``secagg-dp``: the same with distributed DP: clients send clipped model deltas with their share
  of discrete Gaussian noise, the server takes the unweighted mean, and the workflow reports
  epsilon.

After every round the server evaluates the global model on the central test set (FedAvg's
``evaluate_fn``); the script prints accuracy per round per mode and writes
``flower_training.json``, ``.md`` and ``.png`` (accuracy against round) to ``--out``.

Needs ``flwr[simulation]`` (Flower 1.41 with Ray), scikit-learn and matplotlib. Each mode is one
``flwr.simulation.run_simulation`` and pays Ray's start-up (several seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CLASSES = 10
FEATURES = 64
MODES = ("fedavg", "flower-secaggplus", "secagg", "secagg-dp")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a run depends on; two runs with equal settings train the same models."""

    clients: int = 50
    rounds: int = 20
    seed: int = 0
    alpha: float = 0.5  # Dirichlet concentration of each class over the clients
    min_samples: int = 5  # every client holds at least this many training images
    test_fraction: float = 0.25
    local_epochs: int = 2
    batch_size: int = 10
    learning_rate: float = 0.1
    # secagg and Flower SecAgg+: parameters are quantised within [-clipping_range, clipping_range];
    # the weighted mean needs weights (a client's sample count) up to max_weight.
    clipping_range: float = 8.0
    max_weight: float = 1000.0
    timeout: float | None = None
    # secagg-dp: L2 clip of each client's model delta and the noise multiplier z (noise standard
    # deviation of the sum z * clip).
    dp_clip: float = 0.5
    noise_multiplier: float = 2.0
    dp_min_clients: int | None = None  # None: 90% of the clients (dp_min_clients())
    dp_delta: float = 1e-5


# ---------------------------------------------------------------- data and model (plain NumPy)


@dataclass(frozen=True)
class Federation:
    """The clients' training data and the central test set."""

    x_parts: list[np.ndarray]
    y_parts: list[np.ndarray]
    x_test: np.ndarray
    y_test: np.ndarray

    def save(self, path: Path) -> None:
        """One .npz the simulated clients read their own partition from (no sklearn in them)."""
        arrays = {}
        for i, (x, y) in enumerate(zip(self.x_parts, self.y_parts)):
            arrays[f"x{i}"], arrays[f"y{i}"] = x, y
        np.savez(path, **arrays)


def dirichlet_split(labels: np.ndarray, clients: int, alpha: float, min_samples: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Indices per client: each class divided among the clients in Dirichlet(alpha) proportions.
    Redrawn until every client has ``min_samples`` (small alpha and many clients take a few
    draws)."""
    if clients * min_samples > len(labels):
        raise ValueError(f"{len(labels)} training images cannot give {clients} clients "
                         f"{min_samples} each; use at most {len(labels) // min_samples} clients")
    for _ in range(10_000):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            ids = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(ids)).astype(int)[:-1]
            for i, piece in enumerate(np.split(ids, cuts)):
                parts[i].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_samples:
            return out
    raise ValueError(f"no Dirichlet({alpha}) split gave all {clients} clients {min_samples} "
                     "images; raise alpha or lower the client count")


def make_federation(settings: Settings) -> Federation:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float64)  # pixel intensities 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=settings.test_fraction, random_state=settings.seed, stratify=y)
    rng = np.random.default_rng([settings.seed, 1])
    parts = dirichlet_split(y_train, settings.clients, settings.alpha, settings.min_samples, rng)
    return Federation([x_train[p] for p in parts], [y_train[p] for p in parts], x_test, y_test)


def initial_parameters(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, 2])
    return [rng.normal(0.0, 0.01, (FEATURES, CLASSES)), np.zeros(CLASSES)]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def local_train(parameters: list[np.ndarray], x: np.ndarray, y: np.ndarray, settings: Settings,
                rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batch SGD on the cross-entropy; deterministic given ``rng``."""
    w, b = (p.astype(np.float64, copy=True) for p in parameters)
    onehot = np.eye(CLASSES)[y]
    for _ in range(settings.local_epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), settings.batch_size):
            j = order[start:start + settings.batch_size]
            error = _softmax(x[j] @ w + b) - onehot[j]
            w -= settings.learning_rate * (x[j].T @ error) / len(j)
            b -= settings.learning_rate * error.mean(axis=0)
    return [w, b]


def evaluate(parameters: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy)."""
    w, b = parameters
    p = _softmax(x @ w + b)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(np.argmax(p, axis=1) == y))


# ---------------------------------------------------------------- Flower apps


def _client_app(partitions: str, settings: Settings, mods: list):
    """A ClientApp whose NumPyClient trains on partition ``partition-id`` of ``partitions``."""
    from flwr.client import ClientApp, NumPyClient

    class DigitsClient(NumPyClient):
        def __init__(self, partition: int):
            self.partition = partition
            with np.load(partitions) as data:
                self.x, self.y = data[f"x{partition}"], data[f"y{partition}"]

        def fit(self, parameters, config):
            rng = np.random.default_rng([settings.seed, int(config["server_round"]), self.partition])
            return local_train(parameters, self.x, self.y, settings, rng), len(self.x), {}

    def client_fn(context):
        return DigitsClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=mods)


def _fit_workflow_and_mods(mode: str, settings: Settings) -> tuple[object | None, list]:
    """The server's fit workflow (None: Flower's default) and the client mods, for ``mode``."""
    if mode == "fedavg":
        return None, []
    if mode == "flower-secaggplus":
        from flwr.client.mod import secaggplus_mod
        from flwr.server.workflow import SecAggPlusWorkflow

        from secagg.params import find_parameters

        # The graph secagg's parameter finder picks (its defaults: 5% adversarial, 10% dropout);
        # Flower counts the share a client keeps, so num_shares = degree + 1.
        graph = find_parameters(settings.clients, 0.05, 0.1)
        return SecAggPlusWorkflow(
            num_shares=graph.degree + 1, reconstruction_threshold=graph.threshold,
            clipping_range=settings.clipping_range, max_weight=settings.max_weight,
            timeout=settings.timeout), [secaggplus_mod]
    if mode in ("secagg", "secagg-dp"):
        from secagg.flower import DPOptions, SecAggWorkflow, secagg_mod

        # num_shares = reconstruction_threshold = None: secagg's parameter finder picks (k, t).
        dp = None
        if mode == "secagg-dp":
            dp = DPOptions(clip=settings.dp_clip, noise_multiplier=settings.noise_multiplier,
                           min_clients=dp_min_clients(settings), delta=settings.dp_delta)
        return SecAggWorkflow(
            num_shares=None, reconstruction_threshold=None, clipping_range=settings.clipping_range,
            max_weight=settings.max_weight, timeout=settings.timeout, dp=dp), [secagg_mod]
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def dp_min_clients(settings: Settings) -> int:
    """The DP guarantee holds with this many contributors (a round with fewer aborts): every
    client but the 10% dropout the parameter finder plans for. The adapter's default, the
    threshold t (3 of 50), would make each client add noise for a sum of 3: sqrt(50/3) ~ 4x the
    noise the sum of all 50 needs."""
    if settings.dp_min_clients is not None:
        return settings.dp_min_clients
    return max(2, math.ceil(0.9 * settings.clients))


def composed_epsilon(settings: Settings, rounds: int) -> float:
    """Epsilon after ``rounds`` DP rounds with every client sampled (q = 1), from secagg's
    accountant on the plan the workflow builds for this model (the workflow reports each
    round's epsilon)."""
    from secagg.privacy import DPPlan

    plan = DPPlan.create([s.shape for s in initial_parameters(settings.seed)], clip=settings.dp_clip,
                         noise_multiplier=settings.noise_multiplier,
                         min_clients=dp_min_clients(settings), max_clients=settings.clients)
    return plan.epsilon(rounds=rounds, sampling=1.0, delta=settings.dp_delta)


@dataclass
class ModeResult:
    mode: str
    accuracy: list[float] = field(default_factory=list)  # index 0: the initial model
    loss: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # failed client replies per round
    contributors: list[int] = field(default_factory=list)  # secagg: clients in each round's sum
    seconds: float = 0.0
    secure_seconds: float = 0.0  # secagg: time its workflow spent in secure rounds
    phase_seconds: dict[str, float] = field(default_factory=dict)  # secagg: summed over rounds
    max_abs_diff_vs_fedavg: float | None = None  # final parameters, when fedavg ran too
    epsilon: float | None = None  # secagg-dp: after all rounds
    round_epsilon: list[float] = field(default_factory=list)  # secagg-dp: as the workflow reports
    delta: float | None = None
    final_parameters: list[np.ndarray] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        out = asdict(self)
        del out["final_parameters"]
        return out


def run_mode(mode: str, settings: Settings, federation: Federation, partitions: str) -> ModeResult:
    """One Flower simulation of ``settings.rounds`` rounds in ``mode``."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.simulation import run_simulation

    result = ModeResult(mode)
    fit_workflow, mods = _fit_workflow_and_mods(mode, settings)

    def evaluate_fn(server_round, parameters, config):
        loss, accuracy = evaluate(parameters, federation.x_test, federation.y_test)
        result.accuracy.append(accuracy)
        result.loss.append(loss)
        result.final_parameters = [np.array(p, dtype=np.float64) for p in parameters]
        return loss, {"accuracy": accuracy}

    class RecordingFedAvg(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            result.failures.append(len(failures))
            return super().aggregate_fit(server_round, results, failures)

    n = settings.clients
    strategy = RecordingFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(initial_parameters(settings.seed)),
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
        evaluate_fn=evaluate_fn, fit_metrics_aggregation_fn=lambda metrics: {})

    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):
        context = LegacyContext(context=context, config=ServerConfig(num_rounds=settings.rounds),
                                strategy=strategy)
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, context)

    start = time.perf_counter()
    run_simulation(
        server_app=server_app, client_app=_client_app(partitions, settings, mods),
        num_supernodes=n,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"logging_level": logging.ERROR, "log_to_driver": False}})
    result.seconds = time.perf_counter() - start
    for outcome in getattr(fit_workflow, "outcomes", ()):  # secagg's record of its rounds
        if outcome.aborted is not None:
            raise RuntimeError(f"{mode}: round {outcome.round} aborted: {outcome.aborted}")
        result.contributors.append(len(outcome.contributors))
        result.secure_seconds += outcome.seconds
        for phase, seconds in outcome.phase_seconds.items():
            result.phase_seconds[phase] = result.phase_seconds.get(phase, 0.0) + seconds
        if outcome.epsilon is not None:
            result.round_epsilon.append(outcome.epsilon)
    if result.round_epsilon:
        one = composed_epsilon(settings, 1)
        if not math.isclose(one, result.round_epsilon[0], rel_tol=1e-6):
            raise RuntimeError(f"{mode}: the plan rebuilt here gives epsilon {one} for one round, the "
                               f"workflow reported {result.round_epsilon[0]}: they are not the same plan")
        result.epsilon = composed_epsilon(settings, len(result.round_epsilon))
        result.delta = settings.dp_delta
    if len(result.accuracy) != settings.rounds + 1:
        raise RuntimeError(f"{mode}: the server evaluated {len(result.accuracy)} models, expected "
                           f"the initial one and one per round ({settings.rounds + 1})")
    return result


class _DropNotice(logging.Filter):
    """run_simulation's own deprecation notice (it points to `flwr run`): this script is the
    in-process simulation on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


def quiet_flower() -> None:
    """Flower's INFO lines per stage and round, and Ray's, drown the table: warnings only. No
    telemetry events leave the machine."""
    os.environ["FLWR_LOG_LEVEL"] = "WARNING"  # read when flwr is first imported, here and in Ray
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import flwr.common  # noqa: F401  (configures Flower's logger, honouring FLWR_LOG_LEVEL)

    logger = logging.getLogger("flwr")
    for handler in logger.handlers:
        handler.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice())
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def train(settings: Settings, modes: list[str]) -> dict[str, ModeResult]:
    """Run each mode on the same split and initial model; results by mode."""
    quiet_flower()
    federation = make_federation(settings)
    with tempfile.TemporaryDirectory(prefix="flower-training-") as tmp:
        partitions = str(Path(tmp) / "partitions.npz")
        federation.save(Path(partitions))
        results = {mode: run_mode(mode, settings, federation, partitions) for mode in modes}
    if "fedavg" in results:
        base = results["fedavg"].final_parameters
        for r in results.values():
            r.max_abs_diff_vs_fedavg = max(float(np.max(np.abs(a - b)))
                                           for a, b in zip(r.final_parameters, base))
    return results


# ---------------------------------------------------------------- report


def table(results: dict[str, ModeResult]) -> list[str]:
    modes = list(results)
    rounds = len(next(iter(results.values())).accuracy)
    head = "| round | " + " | ".join(modes) + " |"
    lines = [head, "|---:|" + "---:|" * len(modes)]
    for r in range(rounds):
        label = "initial" if r == 0 else str(r)
        lines.append(f"| {label} | " + " | ".join(f"{results[m].accuracy[r]:.4f}" for m in modes) + " |")
    return lines


def report_lines(settings: Settings, results: dict[str, ModeResult], command: str) -> list[str]:
    lines = ["# Federated training with Flower: digits, logistic regression", "",
             f"Command: `{command}`", "",
             f"{settings.clients} clients, Dirichlet alpha {settings.alpha} over labels, "
             f"{settings.rounds} rounds, every client every round, test fraction "
             f"{settings.test_fraction}, seed {settings.seed}; local SGD {settings.local_epochs} "
             f"epochs, batch {settings.batch_size}, learning rate {settings.learning_rate}.", "",
             f"Machine: {_cpu()}, {os.cpu_count()} cores; flwr {_version('flwr')}, ray "
             f"{_version('ray')}.", ""]
    if "secagg-dp" in results:
        lines += [f"secagg-dp: DP-FedAvg, the unweighted mean of model deltas clipped to L2 norm "
                  f"{settings.dp_clip}, distributed discrete Gaussian noise with multiplier "
                  f"{settings.noise_multiplier}, the guarantee holding for >= "
                  f"{dp_min_clients(settings)} contributors; epsilon composed over the rounds at "
                  f"sampling rate 1 by secagg's accountant. Its noise comes from the OS CSPRNG, so "
                  f"its column differs from run to run.", ""]
    lines += ["Test accuracy of the global model after each round (centralised evaluation):", ""]
    lines += table(results)
    lines += ["", "Wall seconds: the whole simulation, Ray's start-up included; secure rounds: the time "
              "secagg's workflow spent in its rounds (clients' training included).", "",
              "| mode | final accuracy | wall seconds | secure rounds s | failed replies | epsilon |",
              "|---|---:|---:|---:|---:|---:|"]
    for m, r in results.items():
        eps = "-" if r.epsilon is None else f"{r.epsilon:.2f} (delta {r.delta:g}; {r.round_epsilon[0]:.2f} per round)"
        secure = "-" if not r.contributors else f"{r.secure_seconds:.1f}"
        lines.append(f"| {m} | {r.accuracy[-1]:.4f} | {r.seconds:.1f} | {secure} | {sum(r.failures)} | {eps} |")
    for m, r in results.items():
        if m in ("flower-secaggplus", "secagg") and r.max_abs_diff_vs_fedavg is not None:
            lines.append(f"\n{m}: final parameters differ from fedavg's by at most "
                         f"{r.max_abs_diff_vs_fedavg:.2e} (the same weighted mean, quantised).")
    return lines


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def plot(settings: Settings, results: dict[str, ModeResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Modes that train the same model draw on top of each other: each gets its own line style.
    styles = {"fedavg": dict(linewidth=4, alpha=0.35), "flower-secaggplus": dict(linestyle=":", marker="s"),
              "secagg": dict(linestyle="--", marker="o"), "secagg-dp": dict(marker="^")}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for m, r in results.items():
        label = m if r.epsilon is None else f"{m} (epsilon {r.epsilon:.1f}, delta {r.delta:g})"
        ax.plot(range(len(r.accuracy)), r.accuracy, markersize=3, label=label, **styles.get(m, {}))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (central test set)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"digits, logistic regression, {settings.clients} clients (Flower simulation)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(settings: Settings, results: dict[str, ModeResult], out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "flower_training.json").write_text(json.dumps(
        {"command": command, "settings": asdict(settings),
         "modes": {m: r.summary() for m, r in results.items()}}, indent=2) + "\n")
    (out / "flower_training.md").write_text("\n".join(report_lines(settings, results, command)) + "\n")
    plot(settings, results, out / "flower_training.png")


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--modes", default="fedavg,secagg,secagg-dp",
                        help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    parser.add_argument("--dp-clip", type=float, default=defaults.dp_clip)
    parser.add_argument("--noise-multiplier", type=float, default=defaults.noise_multiplier)
    parser.add_argument("--dp-min-clients", type=int, default=None,
                        help="DP guarantee holds with this many contributors (default: 90%% of --clients)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write flower_training.{json,md,png} here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
    settings = Settings(clients=args.clients, rounds=args.rounds, seed=args.seed, alpha=args.alpha,
                        dp_clip=args.dp_clip, noise_multiplier=args.noise_multiplier,
                        dp_min_clients=args.dp_min_clients)
    results = train(settings, modes)
    command = "python3 examples/flower_training.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print("\n".join(report_lines(settings, results, command)))
    if args.out is not None:
        write_outputs(settings, results, args.out, command)
        print(f"\nwrote {args.out}/flower_training.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
