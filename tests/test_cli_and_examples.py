"""Layer 5: the command line, the simulator's JSON, and every example script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args, check=True):
    return subprocess.run([sys.executable, "-m", "secagg", *args], capture_output=True, text=True,
                          check=check, cwd=ROOT)


def test_simulate_json_has_the_documented_fields():
    out = run("simulate", "--clients", "30", "--dim", "2000", "--dropout", "0.1", "--seed", "1", "--json")
    obj = json.loads(out.stdout)
    for key in ("clients", "dim", "dropped", "survivors", "exact", "max_abs_error",
                "client_seconds_median", "server_seconds", "bytes_sent_per_client"):
        assert key in obj
    assert obj["exact"] is True and obj["clients"] == 30 and obj["dropped"] == 3 and obj["survivors"] == 27
    assert obj["max_abs_error"] <= obj["error_bound"]


@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "unmask", "mixed"])
def test_simulate_every_drop_stage(stage):
    out = run("simulate", "--clients", "20", "--dim", "100", "--dropout", "0.15", "--drop-stage", stage,
              "--bits", "24", "--seed", "2", "--json")
    assert json.loads(out.stdout)["exact"] is True


def test_simulate_human_summary():
    out = run("simulate", "--clients", "10", "--dim", "50", "--seed", "3")
    assert "sum exact in the ring: yes" in out.stdout


def test_simulate_refuses_a_ring_too_small_naming_the_bits():
    out = run("simulate", "--clients", "1100", "--dim", "10", "--bits", "10", check=False)
    assert out.returncode == 2 and "use bits >= 11" in out.stderr


def test_simulate_names_the_width_safe_for_n_clients():
    out = run("simulate", "--clients", "1100", "--dim", "10", "--levels", str(2**22), "--bits", "32", check=False)
    assert out.returncode == 2 and "1100 clients at 4194304 levels" in out.stderr and "use bits >= 33" in out.stderr


@pytest.mark.parametrize("flag", [["--clip", "2"], ["--noise-multiplier", "0.5"], ["--mechanism", "skellam"],
                                  ["--malicious", "1"]])
def test_privacy_options_without_dp_are_an_error_not_a_silent_non_private_round(flag):
    out = run("simulate", "--clients", "10", "--dim", "10", *flag, check=False)
    assert out.returncode == 2 and f"{flag[0]} given without it" in out.stderr and not out.stdout
    assert "aborted" not in out.stderr


def test_simulate_reports_exclusions_and_ignored_frames_in_json():
    out = run("simulate", "--clients", "20", "--dim", "100", "--seed", "1", "--json")
    obj = json.loads(out.stdout)
    assert obj["excluded"] == {} and obj["refusals"] == {} and obj["ignored"] == {}
    assert obj["network"]["frames"] > 0


def test_simulate_authenticated_round_from_the_command_line():
    out = run("simulate", "--clients", "20", "--dim", "100", "--dropout", "0.1", "--drop-stage", "mixed",
              "--authenticated", "--seed", "4", "--json")
    obj = json.loads(out.stdout)
    assert obj["exact"] is True and obj["excluded"] == {} and obj["refusals"] == {}


def test_simulate_abort_exit_code_and_reason():
    # Half of a full graph's clients vanish during Unmask: too few shares remain.
    out = run("simulate", "--clients", "6", "--dim", "10", "--full-graph", "--threshold", "4",
              "--dropout", "0.5", "--drop-stage", "unmask", "--seed", "1", "--json", check=False)
    obj = json.loads(out.stdout)
    assert out.returncode == 3 and obj["aborted"] and obj["unrecoverable"] and obj["abort_reason"]


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "secagg"  # installed beside this interpreter
    out = subprocess.run([str(script), "params", "--clients", "100", "--json"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["degree"] >= 2


# Examples that need optional packages (skipped without them), and the short run that checks
# each; tests/test_flower_training.py checks what flower_training computes.
EXAMPLE_NEEDS = {"flower_training.py": ("flwr", "ray", "sklearn", "matplotlib")}
EXAMPLE_ARGS = {"flower_training.py": ["--clients", "4", "--rounds", "1", "--modes", "fedavg"]}


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script):
    for module in EXAMPLE_NEEDS.get(script.name, ()):
        pytest.importorskip(module)
    out = subprocess.run([sys.executable, str(script), *EXAMPLE_ARGS.get(script.name, [])],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
