"""Flower's own SecAgg+, secagg's Flower adapter and plain FedAvg: the same clients' updates, the
same Flower setup, one round each.

    python3 -m bench.flower_compare [--points 100:0:varying,1100:0:equal,...] [--backend process|ray]

Theory of operation. Each scenario (n clients, a dropout rate, a weight profile) builds one set of
client updates, then runs one Flower fit round three times over it:

- ``fedavg``: Flower's ``default_fit_workflow`` and a plain ``ClientApp`` (the updates in the
  clear; the reference every secure round should reproduce);
- ``flower``: Flower 1.41's ``SecAggPlusWorkflow`` and ``secaggplus_mod``;
- ``secagg``: ``secagg.flower.SecAggWorkflow`` and ``secagg_mod``, with ``num_shares`` and
  ``reconstruction_threshold`` left to secagg's parameter finder. Flower gets the same graph degree
  and threshold (``num_shares`` = k + 1: Flower counts the client itself).

Both secure workflows get the same ``max_weight`` (the largest sample count) and
``clipping_range`` (8.0, both libraries' default). All three run under the same legacy server
setup (a ``LegacyContext`` with Flower's ``FedAvg`` strategy, every node sampled) and over the same
``Grid`` class, ``secagg.flower.inprocess.InProcessGrid``: every message goes through Flower's own
protobuf serialisation both ways and each node keeps its ``Context`` across messages, as a
SuperNode does, but every ``ClientApp`` runs in this process. ``--backend ray`` runs the same
rounds in Flower's simulation runtime instead (``flwr.simulation.run_simulation``, Ray; the
ServerApp runs ``DefaultWorkflow(fit_workflow=...)`` over the simulation's Grid behind a counting
wrapper; two rounds, the second reported; no dropouts). Ray handles 1,100 SuperNodes on this
2-core machine, but its per-message overhead makes a round there 2.5-3x slower than in process,
and Flower's own SecAgg+ round at n = 1,100 already takes 11-17 min in process (pure-Python
Shamir sharing and reconstruction), so the main table runs in process and the Ray table
(bench/results/flower_compare_ray.md) skips Flower above 100 clients.

The model is an MLP's arrays, 64-128-13 (9,997 float32 parameters in four arrays of different
shapes). Client i's update is uniform in [-1, 1] from a seed of its own; its sample count
(``num_examples``) is uniform in 1..50 (profile ``varying``) or 50 for every client (``equal``,
every client at ``max_weight`` = 50). Dropped clients (the point's dropout fraction, drawn from
the seed) do not answer the request that carries the training instruction (Flower's
``collect_masked_vectors``, secagg's ``MaskedInput``, FedAvg's one fit message) nor anything
after it; the request still counts as sent.

Reported per library: ``round_seconds``, the wall time of the fit workflow (in process, every
client runs in this process, so this is the server's time plus all clients' time, one after another);
``server_seconds`` (the wall time less the time spent inside the nodes' apps) and the median
client's seconds; ``bytes_down`` / ``bytes_up``, the sum of ``message_to_proto(m).ByteSize()``
over every Flower message the server sent and received; ``max_abs_error``, the largest
coordinate error of the released global model against the exact weighted mean of the surviving
clients' updates computed in float64; and ``error_bound``, what quantisation alone can explain
for that library (see :func:`quantisation_bound`). A secure round "matches FedAvg" when its error
is within its bound. One untimed round of 10 clients per library runs first (imports, and the
JIT compilation of secagg's Shamir code, are a process's one-off cost). Writes
bench/results/flower_compare.{json,md} (``--backend ray``: flower_compare_ray.{json,md}).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from bench import cpu_model, write_results

SHAPES = ((64, 128), (128,), (128, 13), (13,))  # an MLP 64-128-13
DIM = sum(int(np.prod(s)) for s in SHAPES)
MAX_WEIGHT = 50
CLIPPING_RANGE = 8.0  # SecAggPlusWorkflow's and SecAggWorkflow's default
LIBRARIES = ("fedavg", "flower", "secagg")
# n:dropout:weights. Flower at n = 1,100 (k = 36, t = 19) takes 11-17 min a round here, most
# of it pure-Python Shamir sharing and reconstruction, so its dropout points are at n = 100 only.
DEFAULT_POINTS = "100:0:varying,100:0:equal,100:0.1:varying,100:0.1:equal,1100:0:varying,1100:0:equal"
LABELS = {"fedavg": "FedAvg (no SecAgg)", "flower": "Flower SecAgg+", "secagg": "secagg"}
# Flower SecAgg+'s fixed-point defaults: 2^22 levels over [-clipping_range, clipping_range], ring Z_2^32.
FLOWER_LEVELS = 2**22
FLOWER_MODULUS = 2**32


def node_ids(n: int, seed: int) -> list[int]:
    """n distinct 64-bit Flower node ids (not 1..n: both adapters must map them)."""
    gen = np.random.default_rng([seed, 0x1D])
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(x) for x in gen.integers(1, 2**63 - 1, n - len(ids), dtype=np.int64))
    return sorted(ids)


def client_update(seed: int, index: int, weights: str) -> tuple[list[np.ndarray], int]:
    """Client ``index``'s arrays (float32, uniform in [-1, 1]) and sample count, from its own seed."""
    gen = np.random.default_rng([seed, index])
    arrays = [gen.uniform(-1.0, 1.0, s).astype(np.float32) for s in SHAPES]
    return arrays, int(gen.integers(1, MAX_WEIGHT + 1)) if weights == "varying" else MAX_WEIGHT


def client_updates(nodes: list[int], seed: int, weights: str) -> tuple[dict, dict]:
    """Every node's update and sample count; node ``nodes[i]`` is client i."""
    arrays, counts = {}, {}
    for i, nid in enumerate(nodes):
        arrays[nid], counts[nid] = client_update(seed, i, weights)
    return arrays, counts


def exact_mean(arrays: dict, counts: dict, among) -> list[np.ndarray]:
    """sum(w x) / sum(w) over ``among``, in float64."""
    total = float(sum(counts[n] for n in among))
    out = [np.zeros(s, np.float64) for s in SHAPES]
    for nid in among:
        for acc, a in zip(out, arrays[nid]):
            acc += counts[nid] * a.astype(np.float64)
    return [a / total for a in out]


def quantisation_bound(library: str, contributors: int, weight_sum: float, mean_abs: float,
                       step: float) -> float:
    """The largest error rounding alone can cause in the released weighted mean.

    Each contributor sends its arrays scaled by u = w / max_weight, each coordinate rounded to a
    multiple of ``step`` (stochastically: off by less than one step), plus its weight u (secagg:
    rounded the same way, inside the secure sum; Flower: rounded to a multiple of 2^-22 before it
    scales the arrays). With m contributors and U = sum(u), the summed arrays S and the summed
    weight are each off by less than m * step, so S / U is off by at most
    m * step * (1 + |mean|) / (U - m * step); Flower's weight rounding adds
    m * 2^-23 * (1 + |mean|) / U. The released float32 model adds half an ulp of |mean|.
    """
    m = contributors
    bound = m * step * (1 + mean_abs) / (weight_sum - m * step)
    if library == "flower":
        bound += m * 0.5 / FLOWER_LEVELS * (1 + mean_abs) / weight_sum
    return bound + mean_abs * 2.0**-24


def secagg_config(n: int):
    """The round config ``SecAggWorkflow(num_shares=None, reconstruction_threshold=None,
    clipping_range=CLIPPING_RANGE)`` builds for n clients (its degree, threshold and quantiser)."""
    from secagg.flower import build_config

    dim = DIM + 1  # the weighted layout appends the weight to the arrays
    return build_config(n, dim, round=1, value_range=max(CLIPPING_RANGE, 1.0))


def _masked_stage(library: str):
    """The request that carries the training instruction, for each library's messages."""
    if library == "fedavg":
        return lambda msg: True  # its one message is the fit instruction
    if library == "flower":
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

        def flower(msg):
            record = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            return record is not None and record.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS
        return flower
    from secagg.flower.layout import RECORD

    def secagg(msg):
        record = msg.content.config_records.get(RECORD)
        return record is not None and record.get("stage") == "MaskedInput"
    return secagg


def drop_rule(library: str, dropped: set[int]):
    """A dropped node answers nothing from its masked-input request on."""
    masked = _masked_stage(library)
    gone: set[int] = set()

    def drop(nid: int, msg) -> bool:
        if nid not in dropped:
            return False
        if nid in gone or masked(msg):
            gone.add(nid)
            return True
        return False
    return drop


def fit_workflow(library: str, num_shares: int, threshold: int):
    """The server's fit workflow and the clients' mods for ``library``."""
    if library == "fedavg":
        from flwr.server.workflow.default_workflows import default_fit_workflow

        return default_fit_workflow, []
    if library == "flower":
        from flwr.client.mod import secaggplus_mod
        from flwr.server.workflow import SecAggPlusWorkflow

        return SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold,
                                  max_weight=float(MAX_WEIGHT), clipping_range=CLIPPING_RANGE), [secaggplus_mod]
    from secagg.flower import SecAggWorkflow, secagg_mod

    return SecAggWorkflow(num_shares=None, reconstruction_threshold=None, max_weight=float(MAX_WEIGHT),
                          clipping_range=CLIPPING_RANGE), [secagg_mod]


def strategy(n: int):
    """Flower's legacy FedAvg, every node sampled for training, no federated evaluation."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import FedAvg

    zeros = [np.zeros(s, np.float32) for s in SHAPES]
    return FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                  initial_parameters=ndarrays_to_parameters(zeros))


def _released(context) -> list[np.ndarray]:
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    record = context.state.array_records[MAIN_PARAMS_RECORD]
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, True))


def _outcome(library: str, workflow) -> dict:
    if library != "secagg":
        return {}
    outcome = workflow.outcomes[-1]
    return {"contributors": len(outcome.contributors),
            "aborted": None if outcome.aborted is None else str(outcome.aborted),
            "refusals": {str(k): str(v) for k, v in outcome.refusals.items()},
            "phase_seconds": dict(outcome.phase_seconds)}


def run_round(library: str, nodes: list[int], arrays: dict, counts: dict, dropped: set[int],
              num_shares: int, threshold: int) -> dict:
    """One fit round of ``library``, every ClientApp in this process behind ``InProcessGrid``;
    returns the released arrays and what the round cost."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    from secagg.flower.inprocess import InProcessGrid

    class UpdateClient(NumPyClient):
        """Training is replaced by the node's known update and sample count."""

        def __init__(self, nid: int) -> None:
            self.nid = nid

        def fit(self, parameters, config):
            return arrays[self.nid], counts[self.nid], {}

    workflow, mods = fit_workflow(library, num_shares, threshold)
    app = ClientApp(client_fn=lambda ctx: UpdateClient(ctx.node_id).to_client(), mods=mods)
    grid = InProcessGrid(app, nodes, drop=drop_rule(library, dropped))
    manager = SimpleClientManager()
    for nid in nodes:
        manager.register(GridClientProxy(nid, grid, 1))
    n = len(nodes)
    fedavg = strategy(n)
    state = RecordDict()
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(fedavg.initial_parameters, True)
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    context = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=fedavg, client_manager=manager)
    t0 = time.perf_counter()
    workflow(grid, context)
    wall = time.perf_counter() - t0
    client_seconds = [grid.client_seconds.get(nid, 0.0) for nid in nodes]
    return {
        "backend": "process",
        "arrays": _released(context),
        "round_seconds": wall,
        "server_seconds": wall - sum(client_seconds),
        "client_seconds_median": statistics.median(client_seconds),
        "bytes_down": grid.bytes_down,
        "bytes_up": grid.bytes_up,
        **_outcome(library, workflow),
    }


# --- Flower's Ray simulation ---------------------------------------------------------------------

def _metered(inner):
    """``inner`` (the Grid Flower's simulation hands the ServerApp) behind a Grid that counts the
    serialised size of every message it pushes and pulls."""
    from flwr.common.serde import message_to_proto
    from flwr.serverapp import Grid

    class MeteredGrid(Grid):
        def __init__(self) -> None:
            self.bytes_down = 0
            self.bytes_up = 0

        def set_run(self, run):  # noqa: D102
            inner.set_run(run)

        @property
        def run(self):  # noqa: D102
            return inner.run

        def create_message(self, *args, **kwargs):  # noqa: D102
            return inner.create_message(*args, **kwargs)

        def get_node_ids(self):  # noqa: D102
            return inner.get_node_ids()

        def get_nodes(self):  # noqa: D102
            return inner.get_nodes()

        def push_messages(self, messages):  # noqa: D102
            messages = list(messages)
            ids = list(inner.push_messages(messages))  # fills in each message's ids first
            self.bytes_down += sum(message_to_proto(m).ByteSize() for m in messages)
            return ids

        def pull_messages(self, message_ids):  # noqa: D102
            replies = list(inner.pull_messages(message_ids))
            self.bytes_up += sum(message_to_proto(m).ByteSize() for m in replies)
            return replies

        def send_and_receive(self, messages, *, timeout=None):
            """InMemoryGrid's loop, over the counting push and pull."""
            pending = set(self.push_messages(messages))
            end = time.time() + (timeout or 0.0)
            replies = []
            while timeout is None or time.time() < end:
                got = self.pull_messages(pending)
                replies += got
                pending -= {m.metadata.reply_to_message_id for m in got}
                if not pending:
                    break
                time.sleep(getattr(inner, "pull_interval", 0.1))
            return replies

    return MeteredGrid()


class _RayClient:
    """Builds a SuperNode's client from its partition id (the client index), in a Ray worker."""

    def __init__(self, seed: int, weights: str) -> None:
        self.seed, self.weights = seed, weights

    def __call__(self, context):
        from flwr.client import NumPyClient

        arrays, count = client_update(self.seed, int(context.node_config["partition-id"]), self.weights)

        class UpdateClient(NumPyClient):
            def fit(self, parameters, config):
                return arrays, count, {}

        return UpdateClient().to_client()


def run_round_ray(library: str, n: int, seed: int, weights: str, num_shares: int, threshold: int) -> dict:
    """Two fit rounds of ``library`` in Flower's simulation runtime (``run_simulation``, Ray): n
    SuperNodes, ``DefaultWorkflow(fit_workflow=...)`` in the ServerApp; no dropouts. The second
    round is reported (every client returns the same update in both)."""
    from flwr.clientapp import ClientApp
    from flwr.server import ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import DefaultWorkflow
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    out: dict = {"backend": "ray"}
    workflow, mods = fit_workflow(library, num_shares, threshold)
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        metered = _metered(grid)
        # Two rounds; the second is the one reported. The first also starts Ray's actors and
        # imports Flower (and secagg) in each: a simulation's one-off cost, not a round's.
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=2), strategy=strategy(n))
        seconds = []

        def timed(g, c) -> None:
            metered.bytes_down = metered.bytes_up = 0
            t0 = time.perf_counter()
            workflow(g, c)
            seconds.append(time.perf_counter() - t0)

        DefaultWorkflow(fit_workflow=timed)(metered, legacy)
        out.update(arrays=_released(legacy), first_round_seconds=seconds[0], round_seconds=seconds[-1],
                   bytes_down=metered.bytes_down, bytes_up=metered.bytes_up)

    client_app = ClientApp(client_fn=_RayClient(seed, weights), mods=mods)
    t0 = time.perf_counter()
    run_simulation(server_app, client_app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    out["simulation_seconds"] = time.perf_counter() - t0
    if "arrays" not in out:
        raise RuntimeError("the simulation ended without the ServerApp finishing its round")
    return {**out, **_outcome(library, workflow)}


def scenario(n: int, dropout: float, weights: str, seed: int, libraries, log, backend: str = "process",
             flower_max_clients: int | None = None) -> list[dict]:
    """Every library's round over one set of updates, each row with its error and bound. Flower's
    SecAgg+ is skipped above ``flower_max_clients`` (the row says so)."""
    if backend == "ray" and dropout:
        raise SystemExit("--backend ray runs without dropouts (the ServerApp cannot tell a SuperNode's "
                         "client index from its node id); use --dropout 0")
    nodes = node_ids(n, seed)
    arrays, counts = client_updates(nodes, seed, weights)
    gen = np.random.default_rng([seed, 0xD0])
    dropped = set(int(x) for x in gen.choice(nodes, size=int(round(dropout * n)), replace=False))
    survivors = [nid for nid in nodes if nid not in dropped]
    truth = exact_mean(arrays, counts, survivors)
    mean_abs = max(float(np.abs(t).max()) for t in truth)
    weight_sum = sum(counts[nid] for nid in survivors) / MAX_WEIGHT
    config = secagg_config(n)
    k, t = config.degree, config.threshold
    steps = {"flower": 2 * CLIPPING_RANGE / FLOWER_LEVELS, "secagg": config.quantizer.step}
    rows, reference = [], None
    for library in libraries:
        log(f"  {library:<6} n={n:>5} dropout={dropout:.2f} weights={weights} (k {k}, t {t}) {backend} ...")
        row = {
            "library": library, "clients": n, "dim": DIM, "dropout": dropout, "weights": weights,
            "dropped": len(dropped), "survivors": len(survivors), "max_weight": MAX_WEIGHT,
            "clipping_range": CLIPPING_RANGE, "seed": seed, "backend": backend,
        }
        if library == "flower" and flower_max_clients is not None and n > flower_max_clients:
            row["skipped"] = f"n > --flower-max-clients {flower_max_clients}"
            rows.append(row)
            log(f"         skipped ({row['skipped']})")
            continue
        try:
            if backend == "ray":
                r = run_round_ray(library, n, seed, weights, num_shares=k + 1, threshold=t)
            else:
                r = run_round(library, nodes, arrays, counts, dropped, num_shares=k + 1, threshold=t)
        except Exception as exc:  # noqa: BLE001 - a library that fails is a result, reported as such
            row["failed"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            log(f"         failed: {row['failed']}")
            continue
        released = r.pop("arrays")
        error = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(released, truth))
        row.update(r, max_abs_error=error, released_dtypes=sorted({a.dtype.name for a in released}))
        if library == "fedavg":
            reference = released
        else:
            row["degree"], row["threshold"] = k, t
            row["error_bound"] = quantisation_bound(library, len(survivors), weight_sum, mean_abs, steps[library])
            row["matches_fedavg"] = error <= row["error_bound"]
        if reference is not None and library != "fedavg":
            row["max_abs_diff_vs_fedavg"] = max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
                                                for a, b in zip(released, reference))
        if library == "flower":
            q_weights = sum(round(counts[nid] / MAX_WEIGHT * FLOWER_LEVELS) for nid in survivors)
            row["flower_weight_sum_over_modulus"] = q_weights / FLOWER_MODULUS
        rows.append(row)
        log(f"         {r['round_seconds']:.2f} s, {r['bytes_down'] / 1e6:.1f} MB down, "
            f"{r['bytes_up'] / 1e6:.1f} MB up, max error {error:.3g}")
    return rows


def _mb(b: int) -> str:
    return f"{b / 1e6:.1f}"


def _seconds(r: dict, key: str, fmt: str) -> str:
    return format(r[key], fmt) if key in r else "-"


def report(rows: list[dict], command: str, backend: str) -> list[str]:
    if backend == "ray":
        where = ("Flower's simulation runtime (`run_simulation`, Ray backend, one CPU per ClientApp "
                 "actor, 2 cores): the ServerApp runs `DefaultWorkflow(fit_workflow=...)` over the "
                 "simulation's Grid behind a counting wrapper; two rounds, no dropouts. Round s = wall time of "
                 "the second round's fit workflow (bytes and error are that round's too); first round s "
                 "includes starting Ray's actors")
    else:
        where = ("Every ClientApp runs in this process behind the same in-process Grid "
                 "(`secagg.flower.inprocess.InProcessGrid`: Flower's protobuf serialisation both ways, a "
                 "Context per node), for all three; see `flower_compare_ray.md` for Flower's Ray "
                 "simulation. Round s = wall time of the fit workflow with every client's work in it; "
                 "server s = round s less the time inside the nodes' apps")
    lines = ["# The same round in Flower: FedAvg, Flower's SecAgg+ and secagg", "",
             f"`{command}` on {cpu_model()}, flwr {_flwr_version()}. One fit round per row over "
             "the same clients' updates (an MLP 64-128-13: 9,997 float32 parameters in four arrays; "
             f"values uniform in [-1, 1]; max_weight = {MAX_WEIGHT}, clipping_range = {CLIPPING_RANGE}); "
             "weights `varying`: num_examples uniform in 1..50, `equal`: 50 for every client. "
             f"{where}. MB = serialised Flower messages (`message_to_proto(m).ByteSize()`), server to "
             "clients and back; error = max |released model - exact float64 weighted mean of the "
             "survivors' updates|; bound = what quantisation alone explains (`quantisation_bound`); "
             "k / t = graph degree and threshold, secagg's parameter finder's choice, given to Flower "
             "as num_shares = k + 1.", ""]
    extra = ("first round s", "first_round_seconds", ".2f") if backend == "ray" else ("server s", "server_seconds", ".2f")
    lines += [f"| n | dropout | weights | library | k / t | round s | {extra[0]} | client s (median) | "
              "MB down | MB up | max abs error | bound | matches FedAvg |",
              "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        head = f"| {r['clients']:,} | {r['dropout']:.0%} | {r['weights']} | {LABELS[r['library']]} |"
        if "failed" in r or "skipped" in r:
            why = f"failed: {r['failed'][:200]}" if "failed" in r else f"skipped ({r['skipped']})"
            lines.append(f"{head} {why} | | | | | | | | |")
            continue
        kt = f"{r['degree']} / {r['threshold']}" if "degree" in r else "-"
        if r["library"] == "fedavg":
            match, bound = "(reference)", "-"
        else:
            match = "yes" if r["matches_fedavg"] else "**NO**"
            bound = f"{r['error_bound']:.1e}"
        lines.append(f"{head} {kt} | {r['round_seconds']:.2f} | {_seconds(r, extra[1], extra[2])} | "
                     f"{_seconds(r, 'client_seconds_median', '.4f')} | {_mb(r['bytes_down'])} | "
                     f"{_mb(r['bytes_up'])} | {r['max_abs_error']:.2e} | {bound} | {match} |")
    wrong = [r for r in rows if r["library"] == "flower" and not r.get("matches_fedavg", True)]
    if wrong:
        lines += ["", "Flower SecAgg+ released a wrong model, with no error and no warning, at "
                  + "; ".join(f"n = {r['clients']:,}, {r['weights']} weights, {r['dropout']:.0%} dropout "
                              f"(its quantised weights sum to {r['flower_weight_sum_over_modulus']:.2f} x 2^32)"
                              for r in wrong)
                  + ". Each client's weight w / max_weight is quantised to 2^22 levels and summed in "
                  "Z_2^32 with the arrays; once the weights add up past 2^32 the divisor wraps. Flower's "
                  "guard compares num_shares, not the number of clients, with 2^32 / 2^22 = 1024."]
    return lines


def _flwr_version() -> str:
    import flwr

    return getattr(flwr, "__version__", "unknown")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default=DEFAULT_POINTS,
                        help="comma-separated n:dropout:weights (weights: varying or equal)")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--backend", choices=("process", "ray"), default="process",
                        help="process: every ClientApp in this process (default); ray: run_simulation")
    parser.add_argument("--flower-max-clients", type=int, default=None,
                        help="skip Flower's SecAgg+ above this many clients (its n = 1,100 round "
                             "takes 11-17 min here; two of them under --backend ray twice that)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    import flwr  # noqa: F401 - Flower sets up its logger on import; quiet it afterwards

    logging.getLogger("flwr").setLevel(logging.ERROR)
    libraries = [x for x in args.libraries.split(",") if x]
    if libraries[0] != "fedavg" and "fedavg" in libraries:
        libraries = ["fedavg"] + [x for x in libraries if x != "fedavg"]
    # One untimed round per library first: imports, and secagg's JIT-compiled Shamir code, are a
    # process's one-off cost, not a round's.
    if args.backend == "process":
        scenario(10, 0.0, "varying", args.seed, libraries, log=lambda s: None)
    rows = []
    for point in args.points.split(","):
        n, dropout, weights = point.split(":")
        if weights not in ("varying", "equal"):
            parser.error(f"weights must be varying or equal, got {weights!r} in {point!r}")
        rows += scenario(int(n), float(dropout), weights, args.seed, libraries,
                         log=lambda s: print(s, flush=True), backend=args.backend,
                         flower_max_clients=args.flower_max_clients)
    command = "python3 -m bench.flower_compare" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}"
        for k in ("backend", "points", "libraries", "flower_max_clients", "seed")
        if getattr(args, k) != parser.get_default(k))
    name = "flower_compare" if args.backend == "process" else "flower_compare_ray"
    write_results(args.out, name, rows, report(rows, command, args.backend))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
