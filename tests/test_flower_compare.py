"""bench.flower_compare at n = 20: FedAvg, Flower's SecAgg+ and secagg run one round over the same
updates, and both secure rounds release FedAvg's model to within quantisation (no time asserted)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("flwr")

from bench.flower_compare import scenario  # noqa: E402


def test_both_secure_rounds_release_fedavgs_weighted_mean_on_the_same_updates():
    logging.getLogger("flwr").setLevel(logging.ERROR)
    rows = scenario(20, 0.1, "varying", seed=3, libraries=("fedavg", "flower", "secagg"), log=lambda s: None)
    by = {r["library"]: r for r in rows}
    assert set(by) == {"fedavg", "flower", "secagg"} and not any("failed" in r for r in rows), rows
    assert by["fedavg"]["max_abs_error"] < 1e-6  # float32 arithmetic only
    for library in ("flower", "secagg"):
        r = by[library]
        assert r["matches_fedavg"], r
        assert r["max_abs_diff_vs_fedavg"] <= r["error_bound"] + 1e-6
    # Two of the twenty do not answer their masked-input request: eighteen contribute.
    assert by["secagg"]["contributors"] == by["secagg"]["survivors"] == 18
    assert all(r["bytes_down"] > 0 and r["bytes_up"] > 0 for r in rows)
