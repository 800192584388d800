"""Telemetry: real rounds observed into a Telemetry, its endpoint scraped over HTTP and parsed.

Counts only, never timings: a phase-duration histogram is checked for how many observations it
holds, not for their values (STYLE: timings live in bench/)."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from secagg.codec import decode, encode  # noqa: E402
from secagg.errors import BadShare, LocalProtocolError, RoundAborted, UnsignedModel  # noqa: E402
from secagg.messages import EncryptedShares  # noqa: E402
from secagg.model_signing import ModelGuard, generate_operator_key, sign_model  # noqa: E402
from secagg.simulate import simulate  # noqa: E402
from secagg.telemetry import Telemetry, simulate_observer  # noqa: E402

from harness import Harness, make_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """GET /metrics; sample name -> {sorted label items: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def by(samples, name, label):
    """{label value: sample value} of a metric with one label."""
    return {dict(k)[label]: v for k, v in samples.get(name, {}).items()}


def phase_seconds(router):
    return {p: t["server"] + t["clients"] for p, t in router.phase_seconds.items()}


def _garbage_share_from(bad):
    """A tamper that replaces ``bad``'s first share ciphertext with random bytes (test_blame)."""
    def tamper(sender, recipient, frame):
        if sender == bad and recipient == 0:
            msg = decode(frame)
            if msg.name == "ShareKeys":
                first = msg.encrypted_shares[0]
                msg = replace(msg, encrypted_shares=(
                    EncryptedShares(first.peer, os.urandom(len(first.ciphertext))), *msg.encrypted_shares[1:]))
                return [encode(msg)]
        return [frame]
    return tamper


@pytest.fixture
def telemetry():
    t = Telemetry()
    yield t
    t.stop()


def test_rounds_are_counted_and_scraped_over_http(telemetry):
    # Round 1: client 5 sends a garbage share ciphertext (blamed, excluded), three clients drop.
    config = make_config(16, 6, dropout_rate=0.3, label="telemetry-blame")
    bad = 5
    schedule = {2: 1, 9: 2, 14: 3}  # silent from ShareKeys, MaskedInput, Unmask
    blamed = Harness(config, label="telemetry-blame", schedule=schedule, tamper=_garbage_share_from(bad))
    blamed.run()
    result = blamed.server.result()
    assert isinstance(blamed.server.excluded[bad], BadShare)
    # Blamed at ShareKeys and silent before MaskedInput: outside the sum; silent at Unmask: inside.
    assert bad not in result.contributors and 2 not in result.contributors and 9 not in result.contributors
    assert 14 in result.contributors
    telemetry.observe_round(blamed.server, phase_seconds=phase_seconds(blamed.router))

    # Round 2: nine of ten clients go silent at once: aborted, too few clients, in AdvertiseKeys.
    small = make_config(10, 4, label="telemetry-abort")
    aborted = Harness(small, label="telemetry-abort", schedule={c: 0 for c in small.clients if c != 1})
    aborted.run()
    with pytest.raises(RoundAborted) as info:
        aborted.server.result()
    assert info.value.cause == "too_few_clients"
    telemetry.observe_round(aborted.server, phase_seconds=phase_seconds(aborted.router))

    # Round 3: the simulator, two clients silent from MaskedInput.
    report = simulate(20, 5, schedule={3: "masked", 7: "masked"}, dropout_rate=0.2, seed=4,
                      on_round=simulate_observer(telemetry))
    assert report.exact and report.survivors == 18

    port = telemetry.serve(0)
    samples = scrape(port)

    assert by(samples, "fl_round_total", "status") == {"completed": 2.0, "aborted": 1.0}
    accepted = by(samples, "fl_client_updates_accepted_total", "client_id")
    expected: dict[str, float] = {}
    for c in list(result.contributors) + [c for c in range(1, 21) if c not in (3, 7)]:
        expected[str(c)] = expected.get(str(c), 0.0) + 1.0
    assert accepted == expected
    assert (accepted["14"], accepted["2"], accepted["9"], accepted[str(bad)]) == (2.0, 1.0, 1.0, 1.0)

    assert samples["fl_gradient_anomaly_detected_total"] == {
        (("client_id", str(bad)), ("reason", "BadShare")): 1.0}
    assert by(samples, "fl_byzantine_client_excluded_total", "client_id") == {str(bad): 1.0}

    dropouts = by(samples, "secagg_client_dropouts_total", "stage")
    # Round 1: share, masked, unmask one each; round 2: nine at advertise; round 3: two at masked.
    assert dropouts == {"share": 1.0, "masked": 3.0, "unmask": 1.0, "advertise": 9.0}
    assert samples["secagg_round_aborts_total"] == {(("cause", "too_few_clients"), ("phase", "AdvertiseKeys")): 1.0}

    counts = by(samples, "secagg_phase_duration_seconds_count", "phase")
    # Three rounds pass AdvertiseKeys (the abort closes it); two go on through Unmask.
    assert counts == {"AdvertiseKeys": 3.0, "ShareKeys": 2.0, "MaskedInput": 2.0, "Unmask": 2.0}
    infinite = by({"b": {k: v for k, v in samples["secagg_phase_duration_seconds_bucket"].items()
                         if ("le", "+Inf") in k}}, "b", "phase")
    assert infinite == counts
    assert samples["fl_model_signature_verification_failure_total"] == {(): 0.0}

    telemetry.stop()
    assert telemetry.port is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_dropouts_are_counted_at_the_stage_they_happened(telemetry):
    config = make_config(20, 4, dropout_rate=0.3, label="telemetry-stages")
    schedule = {4: 0, 8: 1, 12: 2, 16: 3}
    h = Harness(config, label="telemetry-stages", schedule=schedule, announce_losses=True)
    h.run()
    h.server.result()
    assert {c: h.server.dropped_in[c].value for c in schedule} == {
        4: "AdvertiseKeys", 8: "ShareKeys", 12: "MaskedInput", 16: "Unmask"}
    event = telemetry.observe_round(h.server)
    assert event["status"] == "completed"
    assert event["dropped"] == {"advertise": [4], "share": [8], "masked": [12], "unmask": [16]}


def test_an_unfinished_round_or_a_second_observation_is_refused(telemetry):
    config = make_config(8, 3, label="telemetry-twice")
    h = Harness(config, label="telemetry-twice")
    with pytest.raises(LocalProtocolError, match="has not ended"):
        telemetry.observe_round(h.server)
    h.run()
    telemetry.observe_round(h.server)
    with pytest.raises(LocalProtocolError, match="already recorded"):
        telemetry.observe_round(h.server)


def test_each_telemetry_has_its_own_registry():
    a, b = Telemetry(), Telemetry()
    simulate(8, 3, seed=1, on_round=simulate_observer(a))
    assert 'fl_round_total{status="completed"} 1.0' in a.text()
    assert "fl_round_total{" not in b.text()


def test_gauges_the_pipeline_sets_and_model_guard_failures(telemetry):
    key = generate_operator_key()
    guard = ModelGuard(key.public_key(), "model-a")
    telemetry.watch_model_guard(guard)
    arrays = {"w": np.zeros(3, dtype=np.float32)}
    guard.accept(arrays, sign_model(arrays, 0, "model-a", key))
    for _ in range(2):
        with pytest.raises(UnsignedModel):
            guard.accept(arrays, None)
    telemetry.model_signature_failed()
    telemetry.set_model_accuracy(3, 0.91)
    telemetry.set_epsilon_spent(7, 1.25)
    telemetry.privacy_budget_exhausted(7)
    samples = scrape(telemetry.serve(0))
    assert samples["fl_model_signature_verification_failure_total"] == {(): 3.0}
    assert by(samples, "fl_model_accuracy", "round") == {"3": 0.91}
    assert by(samples, "fl_client_epsilon_spent", "client_id") == {"7": 1.25}
    assert by(samples, "fl_privacy_budget_exhausted_total", "client_id") == {"7": 1.0}


def test_observe_round_writes_one_json_line(caplog):
    import logging

    t = Telemetry(logger=logging.getLogger("secagg.telemetry.test"))
    with caplog.at_level(logging.INFO, logger="secagg.telemetry.test"):
        simulate(20, 3, seed=2, schedule={2: "share"}, on_round=simulate_observer(t))
    (record,) = caplog.records
    event = json.loads(record.getMessage())
    assert event["event"] == "round" and event["status"] == "completed"
    assert event["dropped"] == {"share": [2]} and 2 not in event["contributors"]


def test_every_abort_cause_is_a_short_word():
    config = make_config(20, 10, dropout_rate=0.1)
    victim = 5
    h = Harness(config, schedule={v: 3 for v in config.graph.neighbours(victim)})
    h.run()
    t = Telemetry()
    event = t.observe_round(h.server)
    assert (event["status"], event["cause"], event["phase"]) == ("aborted", "unrecoverable_secret", "Unmask")
    assert 'cause="unrecoverable_secret"' in t.text() and str(victim) not in re.findall(r'cause="([^"]*)"', t.text())


# --- the command line -------------------------------------------------------------------------------


def scrape_while_it_holds(proc, timeout=90):
    """Read ``proc``'s stderr until it holds its metrics endpoint open, scrape it, let it end.
    Returns (samples, stdout)."""
    try:
        port = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
            port = int(found.group(1)) if found else port
            if "holding metrics" in line:
                break
        assert port, "the command never said where it serves metrics"
        samples = scrape(port)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return samples, out


def test_simulate_serves_metrics_while_it_holds():
    proc = subprocess.Popen(
        [sys.executable, "-m", "secagg", "simulate", "--clients", "20", "--dim", "50", "--dropout", "0.2",
         "--seed", "1", "--json", "--metrics-port", "0", "--metrics-hold", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    samples, out = scrape_while_it_holds(proc)
    assert proc.returncode == 0
    assert by(samples, "fl_round_total", "status") == {"completed": 1.0}
    assert by(samples, "secagg_client_dropouts_total", "stage") == {"masked": 4.0}
    assert len(samples["fl_client_updates_accepted_total"]) == 16
    assert by(samples, "secagg_phase_duration_seconds_count", "phase") == {
        "AdvertiseKeys": 1.0, "ShareKeys": 1.0, "MaskedInput": 1.0, "Unmask": 1.0}
    assert '"exact": true' in out


def test_serve_over_mqtt_counts_a_client_killed_in_masked_input(broker, tmp_path):
    from test_mqtt_round import D, N, _inputs, _reap, _spawn_clients

    procs = _spawn_clients(broker, tmp_path, _inputs(), {3: "masked"})
    try:
        serve = subprocess.Popen(
            [sys.executable, "-m", "secagg", "serve", "--broker", f"{broker.host}:{broker.port}",
             "--tls", str(broker.files.directory), "--clients", str(N), "--dim", str(D),
             "--dropout-rate", "0.2", "--phase-timeout", "40", "--json",
             "--metrics-port", "0", "--metrics-hold", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        samples, out = scrape_while_it_holds(serve)
    finally:
        _reap(procs)
    # On a sparse graph of 8 a death at MaskedInput may leave a neighbour's secret short of t
    # holders (an abort by name): the metrics must say whatever the round's report says.
    report = json.loads(out.splitlines()[-1])
    assert serve.returncode == (3 if report["aborted"] else 0), out
    assert by(samples, "secagg_client_dropouts_total", "stage") == {"masked": 1.0}
    counts = by(samples, "secagg_phase_duration_seconds_count", "phase")
    assert counts == {g["phase"]: 1.0 for g in report["phases"]}
    if report["aborted"]:
        assert by(samples, "fl_round_total", "status") == {"aborted": 1.0}
        assert sum(samples["secagg_round_aborts_total"].values()) == 1.0
        assert "fl_client_updates_accepted_total" not in samples
    else:
        assert by(samples, "fl_round_total", "status") == {"completed": 1.0}
        assert sorted(by(samples, "fl_client_updates_accepted_total", "client_id"), key=int) == [
            str(c) for c in report["contributors"]]
        assert 3 not in report["contributors"]


def test_metrics_hold_without_a_port_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "secagg", "simulate", "--clients", "8", "--dim", "4",
                          "--metrics-hold", "1"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "--metrics-hold needs --metrics-port" in out.stderr


def test_clients_budgets_feed_the_epsilon_gauge_and_the_exhausted_counter(telemetry):
    """A DP round where client 4's budget is spent: it refuses (counted once under its id) and
    every client's reported epsilon is the gauge's value, scraped over HTTP."""
    from secagg.privacy import DPPlan
    from secagg.privacy.budget import PrivacyBudget

    delta = 1e-5
    plan = DPPlan.create(((64,),), clip=1.0, noise_multiplier=1.0, min_clients=8, max_clients=12)
    one, two = plan.epsilon(rounds=1, delta=delta), plan.epsilon(rounds=2, delta=delta)
    budgets = {c: PrivacyBudget(10 * two, delta, client=c) for c in range(1, 13)}
    budgets[4] = PrivacyBudget((one + two) / 2, delta, client=4)
    budgets[4].charge(plan, round=0, session=b"\x01" * 32)
    report = simulate(12, 0, privacy=plan, seed=5, budgets=budgets, delta=delta,
                      on_round=simulate_observer(telemetry))
    assert list(report.refusals) == [4]
    telemetry.observe_budgets(b.report() for b in budgets.values())
    samples = scrape(telemetry.serve(0))
    spent = by(samples, "fl_client_epsilon_spent", "client_id")
    assert set(spent) == {str(c) for c in range(1, 13)}
    assert all(v == pytest.approx(one) for v in spent.values())
    assert by(samples, "fl_privacy_budget_exhausted_total", "client_id") == {"4": 1.0}
