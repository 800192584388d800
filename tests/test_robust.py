"""Poisoning defences under secure aggregation: groups from the public seed, robust combination of
group means, grouped simulated rounds with error inflation, the CLI and the metric."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from secagg.errors import ConfigurationError
from secagg.robust import METHODS, assign_groups, combine, group_of, simulate_groups


def test_groups_partition_the_clients_evenly_and_follow_the_seed():
    seed = bytes(range(32))
    groups = assign_groups(53, 5, seed)
    flat = sorted(c for g in groups for c in g)
    assert flat == list(range(1, 54))
    assert {len(g) for g in groups} <= {10, 11}
    assert assign_groups(53, 5, seed) == groups
    assert assign_groups(53, 5, bytes(32)) != groups
    assert all(group_of(c, 53, 5, seed) == j for j, g in enumerate(groups) for c in g)
    with pytest.raises(ConfigurationError):
        assign_groups(3, 5, seed)


def honest_means(g=7, d=500, sigma=0.05, seed=0):
    gen = np.random.default_rng(seed)
    signal = gen.normal(size=d)
    signal *= 0.5 / np.linalg.norm(signal)
    return {j: signal + gen.normal(0, sigma, d) for j in range(g)}, signal


@pytest.mark.parametrize("method", ["median", "trimmed", "krum"])
def test_an_outlier_group_is_flagged_and_cannot_move_the_result(method):
    means, signal = honest_means()
    counts = {j: 10 for j in means}
    noise = {j: 0.05 for j in means}
    honest = combine(means, counts, method, clip=1.0, noise_std=noise)
    assert honest.flagged == {}  # no false alarm on honest groups
    means[3] = means[3] + 40.0 * signal  # a x100-scaled client inside group 3
    attacked = combine(means, counts, method, clip=1.0, noise_std=noise)
    assert attacked.flagged == {3: "group_deviation"} and 3 not in attacked.used
    assert np.linalg.norm(attacked.mean - signal) < 2 * np.linalg.norm(honest.mean - signal) + 0.05


def test_none_is_the_pooled_mean():
    means = {0: np.ones(4), 1: np.zeros(4)}
    out = combine(means, {0: 3, 1: 1}, "none", clip=1.0)
    assert np.allclose(out.mean, 0.75) and out.used == (0, 1)
    with pytest.raises(ConfigurationError):
        combine(means, {0: 3, 1: 1}, "mode", clip=1.0)
    assert set(METHODS) == {"none", "median", "trimmed", "krum"}


def test_krum_sets_aside_f_groups_without_calling_it_a_detection():
    means, _ = honest_means(g=7)
    out = combine(means, {j: 10 for j in means}, "krum", clip=1.0, noise_std={j: 0.05 for j in means})
    assert out.flagged == {} and len(out.set_aside) == 2 and len(out.used) == 5


def test_grouped_round_is_exact_and_an_honest_round_flags_nothing():
    report = simulate_groups(40, 300, groups=4, robust="median", dropout=0.1, seed=5, label="honest")
    assert not report.aborted and report.exact
    assert report.combined["flagged"] == {}
    assert all(not g["rejected"] and not g["aborted"] for g in report.group_reports)
    assert sum(g["clients"] for g in report.group_reports) == 40
    assert report.error_inflation is None and report.epsilon > 0


@pytest.mark.parametrize("method", ["none", "median", "trimmed", "krum"])
def test_a_scaling_attacker_is_neutralised(method):
    report = simulate_groups(50, 2000, groups=5, robust=method, dropout=0.1, seed=11, malicious=1,
                             attack="scale", label=f"attack {method}")
    assert report.malicious and report.attack == "scale"
    attacked = [g for g in report.group_reports if g["malicious"]]
    assert len(attacked) == 1
    # Its group is set aside, by the group's own checks or by the combiner's deviation check.
    group = attacked[0]["group"]
    assert attacked[0]["rejected"] or group not in report.combined["used"]
    assert report.error_inflation <= 1.5 and report.neutralised


def test_named_attackers_are_the_ones_that_attack():
    report = simulate_groups(30, 200, groups=3, robust="median", seed=1, attackers=[4, 17], attack="scale",
                             label="named", baseline=False)
    assert report.malicious == [4, 17]
    assert sorted(c for g in report.group_reports for c in g["malicious"]) == [4, 17]
    with pytest.raises(ConfigurationError):
        simulate_groups(30, 200, groups=3, attackers=[31], attack="scale")


def test_cli_groups_json_and_refusals():
    out = subprocess.run([sys.executable, "-m", "secagg", "simulate", "--clients", "30", "--dim", "200",
                          "--dp", "--groups", "3", "--robust", "trimmed", "--malicious", "1", "--attack",
                          "signflip", "--seed", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["groups"] == 3 and report["robust"] == "trimmed"
    assert report["error_inflation"] is not None and report["combined"]["used"]
    bad = subprocess.run([sys.executable, "-m", "secagg", "simulate", "--clients", "30", "--dim", "20",
                          "--dp", "--groups", "2", "--robust", "median"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--groups 3 or more" in bad.stderr


def test_a_set_aside_group_counts_as_an_anomaly_without_naming_a_client():
    telemetry = pytest.importorskip("secagg.telemetry")
    t = telemetry.Telemetry()
    simulate_groups(50, 2000, groups=5, robust="krum", dropout=0.1, seed=11, malicious=1, attack="scale",
                    label="metric", telemetry=t)
    text = t.text()
    lines = [line for line in text.splitlines() if line.startswith("fl_gradient_anomaly_detected_total{")]
    assert lines and all('client_id=""' in line for line in lines)
    assert any("group_check_rejected" in line or "group_deviation" in line for line in lines)
