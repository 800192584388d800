"""Flower's own SecAgg+, secagg's Flower adapter and plain FedAvg: the same clients' updates, the
same Flower setup, one round each.

    python3 -m bench.flower_compare [--clients 100,1100] [--dropout 0,0.1] [--weights varying,equal]

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
SuperNode does, but every ``ClientApp`` runs in this process. Flower's Ray simulation
(``flwr.simulation.run_simulation``) was tried first and is impractical here: on this 2-core
machine one Flower SecAgg+ fit round of 1,100 SuperNodes took 322 s under Ray (a plain FedAvg
round 29 s), nearly all of it Ray's per-message overhead rather than either protocol.

The model is an MLP's arrays, 64-128-13 (9,997 float32 parameters in four arrays of different
shapes). Client i's update is uniform in [-1, 1] from a seed of its own; its sample count
(``num_examples``) is uniform in 1..50 (profile ``varying``) or 50 for every client (``equal``,
every client at ``max_weight`` = 50). Dropped clients (``--dropout``: that fraction, drawn from the
seed) do not answer the request that carries the training instruction (Flower's
``collect_masked_vectors``, secagg's ``MaskedInput``, FedAvg's one fit message) nor anything
after it; the request still counts as sent.

Reported per library: ``round_seconds``, the wall time of the fit workflow (every client runs in
this process, so this is the server's time plus all clients' time, one after another);
``server_seconds`` (the wall time less the time spent inside the nodes' apps) and the median
client's seconds; ``bytes_down`` / ``bytes_up``, the sum of ``message_to_proto(m).ByteSize()``
over every Flower message the server sent and received; ``max_abs_error``, the largest
coordinate error of the released global model against the exact weighted mean of the surviving
clients' updates computed in float64; and ``error_bound``, what quantisation alone can explain
for that library (see :func:`quantisation_bound`). A secure round "matches FedAvg" when its error
is within its bound. One untimed round of 10 clients per library runs first (imports, and the
JIT compilation of secagg's Shamir code, are a process's one-off cost). Writes bench/results/flower_compare.{json,md}.
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


def client_updates(nodes: list[int], seed: int, weights: str) -> tuple[dict, dict]:
    """Each node's arrays (float32, uniform in [-1, 1]) and sample count, from a seed of its own."""
    arrays, counts = {}, {}
    for i, nid in enumerate(nodes):
        gen = np.random.default_rng([seed, i])
        arrays[nid] = [gen.uniform(-1.0, 1.0, s).astype(np.float32) for s in SHAPES]
        counts[nid] = int(gen.integers(1, MAX_WEIGHT + 1)) if weights == "varying" else MAX_WEIGHT
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


def run_round(library: str, nodes: list[int], arrays: dict, counts: dict, dropped: set[int],
              num_shares: int, threshold: int) -> dict:
    """One fit round of ``library`` over the in-process grid; returns the released arrays and
    what it cost."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    from secagg.flower.inprocess import InProcessGrid

    class UpdateClient(NumPyClient):
        """Training is replaced by the node's known update and sample count."""

        def __init__(self, nid: int) -> None:
            self.nid = nid

        def fit(self, parameters, config):
            return arrays[self.nid], counts[self.nid], {}

    if library == "fedavg":
        from flwr.server.workflow.default_workflows import default_fit_workflow as workflow

        mods = []
    elif library == "flower":
        from flwr.client.mod import secaggplus_mod
        from flwr.server.workflow import SecAggPlusWorkflow

        mods = [secaggplus_mod]
        workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold,
                                      max_weight=float(MAX_WEIGHT), clipping_range=CLIPPING_RANGE)
    else:
        from secagg.flower import SecAggWorkflow, secagg_mod

        mods = [secagg_mod]
        workflow = SecAggWorkflow(num_shares=None, reconstruction_threshold=None,
                                  max_weight=float(MAX_WEIGHT), clipping_range=CLIPPING_RANGE)

    app = ClientApp(client_fn=lambda ctx: UpdateClient(ctx.node_id).to_client(), mods=mods)
    grid = InProcessGrid(app, nodes, drop=drop_rule(library, dropped))
    manager = SimpleClientManager()
    for nid in nodes:
        manager.register(GridClientProxy(nid, grid, 1))
    n = len(nodes)
    state = RecordDict()
    zeros = [np.zeros(s, np.float32) for s in SHAPES]
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(ndarrays_to_parameters(zeros), True)
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n)
    context = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=strategy, client_manager=manager)
    t0 = time.perf_counter()
    workflow(grid, context)
    wall = time.perf_counter() - t0
    released = parameters_to_ndarrays(compat.arrayrecord_to_parameters(state.array_records[MAIN_PARAMS_RECORD], True))
    client_seconds = [grid.client_seconds.get(nid, 0.0) for nid in nodes]
    out = {
        "arrays": released,
        "round_seconds": wall,
        "server_seconds": wall - sum(client_seconds),
        "client_seconds_median": statistics.median(client_seconds),
        "bytes_down": grid.bytes_down,
        "bytes_up": grid.bytes_up,
    }
    if library == "secagg":
        outcome = workflow.outcomes[-1]
        out["contributors"] = len(outcome.contributors)
        out["aborted"] = None if outcome.aborted is None else str(outcome.aborted)
        out["refusals"] = {str(k): str(v) for k, v in outcome.refusals.items()}
        out["phase_seconds"] = dict(outcome.phase_seconds)
    return out


def scenario(n: int, dropout: float, weights: str, seed: int, libraries, log) -> list[dict]:
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
        log(f"  {library:<6} n={n:>5} dropout={dropout:.2f} weights={weights} (k {k}, t {t}) ...")
        row = {
            "library": library, "clients": n, "dim": DIM, "dropout": dropout, "weights": weights,
            "dropped": len(dropped), "survivors": len(survivors), "max_weight": MAX_WEIGHT,
            "clipping_range": CLIPPING_RANGE, "seed": seed,
        }
        try:
            r = run_round(library, nodes, arrays, counts, dropped, num_shares=k + 1, threshold=t)
        except Exception as exc:  # noqa: BLE001 - a library that fails is a result, reported as such
            row["failed"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            log(f"         failed: {row['failed']}")
            continue
        released = r.pop("arrays")
        error = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(released, truth))
        row.update(r, max_abs_error=error)
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


def report(rows: list[dict], command: str) -> list[str]:
    lines = ["# The same round in Flower: FedAvg, Flower's SecAgg+ and secagg", "",
             f"`{command}` on {cpu_model()}, flwr {_flwr_version()}. One fit round per row over "
             "the same clients' updates (an MLP 64-128-13: 9,997 float32 parameters in four arrays; "
             f"values uniform in [-1, 1]; max_weight = {MAX_WEIGHT}, clipping_range = {CLIPPING_RANGE}); "
             "weights `varying`: num_examples uniform in 1..50, `equal`: 50 for every client. "
             "Every ClientApp runs in this process behind the same in-process Grid (Flower's protobuf "
             "serialisation both ways); Flower's Ray simulation took 322 s for one Flower SecAgg+ round "
             "of 1,100 nodes on this machine, so it is not used. Round s = wall time of the fit workflow, "
             "all clients included; MB = serialised Flower messages; error = max |released - exact "
             "float64 weighted mean of the survivors|; bound = what quantisation alone explains.", "",
             "| n | dropout | weights | library | k / t | round s | server s | client s (median) | "
             "MB down | MB up | max abs error | bound | matches FedAvg |",
             "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['clients']:,} | {r['dropout']:.0%} | {r['weights']} | {LABELS[r['library']]} | "
                         f"failed: {r['failed'][:200]} | | | | | | | | |")
            continue
        kt = f"{r['degree']} / {r['threshold']}" if "degree" in r else "-"
        if r["library"] == "fedavg":
            match, bound = "(reference)", "-"
        else:
            match = "yes" if r["matches_fedavg"] else "**NO**"
            bound = f"{r['error_bound']:.1e}"
        lines.append(f"| {r['clients']:,} | {r['dropout']:.0%} | {r['weights']} | {LABELS[r['library']]} | {kt} | "
                     f"{r['round_seconds']:.2f} | {r['server_seconds']:.2f} | {r['client_seconds_median']:.4f} | "
                     f"{_mb(r['bytes_down'])} | {_mb(r['bytes_up'])} | {r['max_abs_error']:.2e} | {bound} | {match} |")
    wrong = [r for r in rows if r["library"] == "flower" and not r.get("matches_fedavg", True)]
    if wrong:
        lines += ["", "Flower SecAgg+ gave a wrong model without an error or a warning in "
                  + ", ".join(f"n = {r['clients']:,} ({r['weights']} weights, {r['dropout']:.0%} dropout: "
                              f"summed quantised weights = {r['flower_weight_sum_over_modulus']:.2f} x 2^32)"
                              for r in wrong)
                  + ". Its quantised weights w / max_weight * 2^22 are summed in Z_2^32 with the "
                  "arrays, so once they add up past 2^32 the divisor wraps; its guard compares "
                  "num_shares, not n, with 2^32 / 2^22 = 1024."]
    return lines


def _flwr_version() -> str:
    import flwr

    return getattr(flwr, "__version__", "unknown")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,1100", help="comma-separated n")
    parser.add_argument("--dropout", default="0,0.1", help="comma-separated dropout fractions")
    parser.add_argument("--weights", default="varying,equal", help="varying and/or equal")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
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
    scenario(10, 0.0, "varying", args.seed, libraries, log=lambda s: None)
    rows = []
    for n in (int(x) for x in args.clients.split(",")):
        for dropout in (float(x) for x in args.dropout.split(",")):
            for weights in args.weights.split(","):
                rows += scenario(n, dropout, weights, args.seed, libraries,
                                 log=lambda s: print(s, flush=True))
    command = "python3 -m bench.flower_compare" + "".join(
        f" --{k} {v}" for k, v in (("clients", args.clients), ("dropout", args.dropout), ("weights", args.weights))
        if v != parser.get_default(k))
    write_results(args.out, "flower_compare", rows, report(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
