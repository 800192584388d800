"""The clients on a process pool (``secagg.sim.pool``): the same round as in process.

With deterministic randomness a pooled client is the same client as in process (its randomness is
forked from the same label), so the pooled round must give the very same ring sum, survivors and
bytes as the serial one, for dropouts at every stage. Each round here starts one or two fresh
interpreters (about a second); the large runs are soaks in bench/scale_clients.py, not tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import ConfigurationError, InconsistentRequest, RoundAborted
from secagg.protocol.client import ClientLimits
from secagg.protocol.rounds import STAGE_ORDER, Stage
from secagg.sim.pool import worker_blocks
from secagg.simulate import Faults, simulate
from secagg.sim.scenario import dropout_schedule

N, DIM = 60, 300
SCHEDULE = dropout_schedule(N, 0.2, "mixed", 3)


def _round(workers: int, **kw):
    kw.setdefault("schedule", SCHEDULE)
    return simulate(N, DIM, seed=3, insecure_deterministic="pool test", client_workers=workers, **kw)


@pytest.fixture(scope="module")
def serial():
    return _round(0)


def test_the_schedule_drops_clients_at_every_stage():
    assert set(SCHEDULE.values()) == set(STAGE_ORDER)


def test_pooled_round_is_the_serial_round(serial):
    pooled = _round(2)
    assert serial.exact and pooled.exact
    assert np.array_equal(pooled.result.ring_sum, serial.result.ring_sum)
    for field in ("survivors", "dropped", "dropped_by_stage", "degree", "threshold", "excluded",
                  "bytes_sent_per_client", "bytes_received_per_client", "client_mask_expansions_median",
                  "server_mask_expansions", "max_abs_error"):
        assert getattr(pooled, field) == getattr(serial, field), field
    assert pooled.network["undelivered"] == serial.network["undelivered"]
    assert pooled.client_workers == 2 and serial.client_workers == 0
    assert len(pooled.worker_peak_rss_bytes) == 2 and min(pooled.worker_peak_rss_bytes) > 0
    assert set(pooled.phase_seconds) == set(serial.phase_seconds)


def test_one_worker_and_announced_losses():
    serial = _round(0, announce_losses=True)
    pooled = _round(1, announce_losses=True)
    assert pooled.exact and np.array_equal(pooled.result.ring_sum, serial.result.ring_sum)


def test_a_round_that_aborts_aborts_the_same_way():
    schedule = {c: Stage.UNMASK for c in range(1, 31)}  # half the clients vanish at Unmask
    serial, pooled = _round(0, schedule=schedule), _round(2, schedule=schedule)
    assert serial.aborted and pooled.aborted
    assert pooled.abort_reason == serial.abort_reason and pooled.unrecoverable == serial.unrecoverable
    with pytest.raises(RoundAborted):
        _round(2, schedule=schedule, raise_on_abort=True)


def test_refusals_cross_back_typed():
    pooled = _round(2, schedule={}, client_limits=ClientLimits(max_dim=DIM - 1))
    assert pooled.aborted and len(pooled.refusals) == N
    serial = _round(0, schedule={}, client_limits=ClientLimits(max_dim=DIM - 1))
    assert pooled.refusals == serial.refusals


def test_refusal_objects_keep_class_and_attributes():
    from secagg.sim import pool

    exc = pool._error(7, "InconsistentRequest", "no", {"round": 0, "state": "s", "phase": "p"})
    assert type(exc) is InconsistentRequest and (exc.client, exc.round, exc.phase) == (7, 0, "p")
    assert type(pool._error(7, "os.system", "no", {})).__name__ == "SecAggError"


@pytest.mark.parametrize("kw, word", [
    (dict(faults=Faults(duplicate=0.5)), "faults"),
    (dict(transcript=[]), "transcript"),
    (dict(tamper=lambda s, r, f: [f]), "tamper"),
    (dict(inputs=lambda c: np.zeros(DIM)), "inputs"),
    (dict(authenticated=True), "authenticated"),
])
def test_what_stays_in_process_is_refused_with_workers(kw, word):
    with pytest.raises(ConfigurationError, match=word):
        simulate(N, DIM, client_workers=2, **kw)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2"])
def test_client_workers_must_be_a_count(bad):
    with pytest.raises(ConfigurationError, match="client_workers"):
        simulate(N, DIM, client_workers=bad)


def test_worker_blocks_cover_every_client_once():
    for n, w in ((60, 2), (7, 3), (5, 8), (100_000, 2)):
        blocks = worker_blocks(n, w)
        assert len(blocks) == min(n, w)
        ids = [c for a, b in blocks for c in range(a, b + 1)]
        assert ids == list(range(1, n + 1))


def test_command_line_runs_the_clients_on_workers(capsys):
    import json

    from secagg.cli import main

    assert main(["simulate", "--clients", "40", "--dim", "50", "--dropout", "0.1", "--seed", "1",
                 "--client-workers", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"] and out["client_workers"] == 2 and len(out["worker_peak_rss_bytes"]) == 2
    assert main(["simulate", "--clients", "40", "--dim", "50", "--dp", "--client-workers", "2"]) == 2
    assert "privacy" in capsys.readouterr().err
