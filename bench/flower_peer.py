"""Flower's SecAgg+ (its own server workflow and client mod), driven in one process, no network.

The peer figures in the benchmark come from here: Flower's ``SecAggPlusWorkflow`` runs against an
in-process ``Grid`` whose ``send_and_receive`` hands each message straight to a ``ClientApp``
wrapped in Flower's ``secaggplus_mod``. Time spent inside client calls is client time; the rest of
the workflow is server time. Dropped clients do not answer the "collect masked vectors" stage
(they drop before their masked input arrives, as in the benchmark's scenarios).

Needs the optional extra: ``pip install -e ".[bench]"`` (flwr). Nothing here is imported by secagg.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np


def available() -> str | None:
    """Flower's version, or None if it is not installed."""
    try:
        import flwr
    except ImportError:
        return None
    return getattr(flwr, "__version__", "unknown")


def run_flower_secaggplus(
    clients: int, dim: int, dropout: float, num_shares: int, threshold: int, seed: int = 0
) -> dict:
    """One Flower SecAgg+ round. Returns client/server seconds and whether the sum was right."""
    from flwr.app import Context, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord

    from secagg.flower.inprocess import InProcessGrid

    logging.getLogger("flwr").setLevel(logging.WARNING)
    gen = np.random.default_rng(seed)
    node_ids = list(range(1001, 1001 + clients))
    updates = {nid: gen.uniform(-1.0, 1.0, dim).astype(np.float32) for nid in node_ids}
    dropped = set(gen.choice(node_ids, size=int(round(dropout * clients)), replace=False).tolist())

    class UpdateClient(NumPyClient):
        def __init__(self, nid: int) -> None:
            self.nid = nid

        def fit(self, parameters, config):
            return [updates[self.nid]], 1, {}

    app = ClientApp(client_fn=lambda ctx: UpdateClient(ctx.node_id).to_client(), mods=[secaggplus_mod])
    def drop(nid, msg):  # dropped clients skip the masked stage and everything after it
        configs = msg.content.config_records.get("secaggplus_configs") or {}
        return nid in dropped and configs.get("stage") in ("collect_masked_vectors", "unmask")

    grid = InProcessGrid(app, node_ids, drop=drop)
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(nid, grid, 1))
    state = RecordDict()
    zeros = [np.zeros(dim, dtype=np.float32)]
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(ndarrays_to_parameters(zeros), True)
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=clients, min_available_clients=clients)
    context = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=strategy, client_manager=manager)
    # max_weight = 1: every client reports one example, so no precision is spent on weights.
    workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold, max_weight=1.0)
    t0 = time.perf_counter()
    workflow(grid, context)
    total = time.perf_counter() - t0
    client_seconds = grid.client_seconds
    in_clients = [sum(client_seconds.values())]
    survivors = [nid for nid in node_ids if nid not in dropped]
    # FedAvg with one example per client returns the mean of the survivors' updates.
    arrays = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], True)
    from flwr.common import parameters_to_ndarrays

    result = parameters_to_ndarrays(arrays)[0]
    true_mean = np.mean([updates[n] for n in survivors], axis=0)
    error = float(np.max(np.abs(result - true_mean)))
    return {
        "peer": "flower",
        "peer_version": available(),
        "peer_client_seconds_median": statistics.median(client_seconds[n] for n in node_ids),
        "peer_server_seconds": total - in_clients[0],
        "peer_max_abs_error_of_mean": error,
        "peer_correct": error < 1e-3,
        "peer_num_shares": num_shares,
        "peer_threshold": threshold,
    }


if __name__ == "__main__":
    import json
    import sys

    n, d = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (20, 1000)
    print(json.dumps(run_flower_secaggplus(n, d, 0.1, 11, 6)))
