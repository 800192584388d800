"""Import hygiene: a client process loads neither galois, scipy.stats, dp_accounting nor tqdm.

Each costs a short-lived client more than its round (issue 8, item 6; bench/coldstart.py). The
checks run in fresh interpreters, since this one has imported everything already.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("galois", "numba", "scipy.stats", "dp_accounting", "tqdm")


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)


def test_import_secagg_and_split_load_no_heavy_module():
    code = f"""
import sys
import secagg
from secagg.crypto import shamir
from secagg.params import find_parameters
assert secagg.__file__.startswith({str(ROOT)!r}), secagg.__file__
find_parameters(1000, 0.05, 0.1)
shares = shamir.split([bytes(32), b"\\xff" * 32], list(range(1, 30)), 12, __import__("os").urandom)
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, loaded
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr


def test_a_client_round_loads_no_heavy_module(tmp_path):
    from bench import coldstart

    frames = tmp_path / "frames.json"
    coldstart.record(frames)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "coldstart.py"), "client", str(frames)],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["state"] == "Done"
    assert not [m for m in report["heavy_modules"] if m in HEAVY], report
