"""A round across processes over a real MQTT broker with mutual TLS, on loopback.

    python examples/mqtt_round.py [--clients 10] [--dim 1000]

It writes a test deployment (CA, broker, server and client certificates, mosquitto.conf, ACL:
what `secagg broker-config` writes), starts mosquitto on a free port, starts one
`secagg client` process per client, and runs `secagg serve`, which prints the sum; then checks
it against the true sum of the inputs. Needs mosquitto (Debian: apt-get install -y mosquitto).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from secagg.transport.broker import Mosquitto, free_port, write_broker_config

parser = argparse.ArgumentParser()
parser.add_argument("--clients", type=int, default=10)
parser.add_argument("--dim", type=int, default=1000)
args = parser.parse_args()

work = Path(tempfile.mkdtemp(prefix="secagg-mqtt-"))
files = write_broker_config(work / "broker", clients=range(1, args.clients + 1), port=free_port())
rng = np.random.default_rng(5)
inputs = {c: rng.uniform(-1, 1, args.dim) for c in files.clients}
broker = f"{files.host}:{files.port}"

with Mosquitto(files):
    clients = []
    for c, x in inputs.items():
        np.save(work / f"input-{c}.npy", x)
        clients.append(subprocess.Popen(
            [sys.executable, "-m", "secagg", "client", "--broker", broker, "--tls", str(files.directory),
             "--id", str(c), "--input", str(work / f"input-{c}.npy"), "--idle-timeout", "60"]))
    try:
        served = subprocess.run(
            [sys.executable, "-m", "secagg", "serve", "--broker", broker, "--tls", str(files.directory),
             "--clients", str(args.clients), "--dim", str(args.dim), "--phase-timeout", "30",
             "--json", "--out", str(work / "sums")],
            capture_output=True, text=True, timeout=120, check=True)
    finally:
        for p in clients:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
report = json.loads(served.stdout.splitlines()[-1])
total = np.load(work / "sums" / "round-0.npy")
truth = sum(inputs[c] for c in report["contributors"])
print(f"round over MQTT with mutual TLS: {len(report['contributors'])} of {args.clients} clients in "
      f"{report['seconds']:.2f} s")
for phase in report["phases"]:
    print(f"  {phase['phase']:>13}: {phase['arrivals']} arrivals in {phase['seconds']:.3f} s")
print(f"first coordinates of the sum: {np.round(total[:4], 6).tolist()}")
print(f"max |sum - true sum| = {np.max(np.abs(total - truth)):.2e}")
assert np.allclose(total, truth, atol=len(report["contributors"]) * 2.0 / 2**20)
