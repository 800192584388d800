"""Cold start: what a whole process costs, from exec to exit (issue 8, item 6).

Two processes are timed from outside, farm-bench style (one warm-up run, then the median of 5):

- ``simulate``: ``python -m secagg simulate --clients 10 --dim 10``, a whole 10-client round with
  its server, as a user first tries the library;
- ``client``: one client that starts, joins one round and exits: it decodes the server's frames
  of a recorded 10-client round, quantises its input, splits and encrypts its shares, masks its
  vector and answers the unmasking request, and checks that every reply is byte for byte the one
  it sent in the recorded round. No server code runs in it.

``before`` is the same two processes on the code of another commit (default 5a328ce, the commit
this work started from), unpacked with ``git archive`` into a temporary directory; each tree
records its own round with its own code (``python3 bench/coldstart.py record FRAMES``), since the
wire format changed in between, and the client process speaks either driver API.

    python3 -m bench.coldstart [--runs 5] [--before 5a328ce | --before none]

writes bench/results/coldstart.json and coldstart.md. The module also runs as a script
(``python3 bench/coldstart.py client FRAMES``): that is the client process, and it imports nothing
but secagg, so it runs on the old code as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LABEL = "coldstart"
CLIENTS, DIM = 10, 10
HEAVY = ("galois", "numba", "scipy", "scipy.stats", "scipy.special", "dp_accounting", "tqdm")


def record(path: Path) -> dict:
    """Run one deterministic round in process and keep what client 1 received and sent."""
    from secagg.simulate import make_input, simulate

    transcript: list[tuple[str, int, int, bytes]] = []
    report = simulate(CLIENTS, DIM, insecure_deterministic=LABEL, seed=0, transcript=transcript)
    client = 1
    rec = {
        "source": f"secagg simulate({CLIENTS}, {DIM}, insecure_deterministic={LABEL!r}, seed=0)",
        "label": LABEL,
        # Old code: simulate forked its root stream in this order before client 1's (by call order).
        "forks_before": ["config", "server"],
        "client": client,
        "input": [float(v) for v in make_input(0, client, DIM, 1.0)],
        "frames": [f.hex() for d, _, r, f in transcript if d == "server->client" and r == client],
        "replies": [f.hex() for d, s, _, f in transcript if d == "client->server" and s == client],
        "sum_exact": bool(getattr(report, "exact", True)),
    }
    path.write_text(json.dumps(rec))
    return rec


def client_round(path: str) -> None:
    """The client process: one round from recorded frames; prints the heavy modules it loaded."""
    import numpy as np

    from secagg.crypto.randomness import DeterministicRandom
    from secagg.protocol.client import Client

    rec = json.loads(Path(path).read_text())
    root = DeterministicRandom(rec["label"])
    replies: list[bytes] = []
    if not hasattr(Client, "receive_data"):  # the driver seam: frames in, Outgoing frames out
        client = Client(rec["client"], np.asarray(rec["input"]), rng=root.fork("client", rec["client"]))
        for frame in map(bytes.fromhex, rec["frames"]):
            replies += [out.frame for out in client.receive(frame)]
    else:  # the first version's API, with randomness forked by call order
        from secagg.codec import encode, peek_type
        from secagg.messages import MaskedInputRequest

        for label in rec["forks_before"]:
            root.fork(label)
        for c in range(1, rec["client"]):
            root.fork(f"client {c}")
        client = Client(rec["client"], rng=root.fork(f"client {rec['client']}"))
        for frame in map(bytes.fromhex, rec["frames"]):
            if peek_type(frame) is MaskedInputRequest:
                client.provide_input(np.asarray(rec["input"]))
            replies += [encode(m) for m in client.receive_data(frame)]
    if [r.hex() for r in replies] != rec["replies"]:
        sys.exit("the client's replies differ from the recorded round")
    print(json.dumps({"heavy_modules": [m for m in HEAVY if m in sys.modules], "state": client.state.value}))


def time_processes(commands: dict[str, tuple[list[str], dict, Path]], runs: int) -> dict[str, dict]:
    """Wall seconds of whole processes, min/median/max of ``runs`` after one warm-up each.

    The commands run in turn (A B C A B C ...), as farm-bench --vs does, so that a drift in the
    machine's speed (it is shared) moves every command alike.
    """
    walls: dict[str, list[float]] = {name: [] for name in commands}
    last: dict[str, str] = {}
    for i in range(runs + 1):
        for name, (argv, env, cwd) in commands.items():
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{name}: {argv} failed: {done.stderr[-2000:]}")
            last[name] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            if i:
                walls[name].append(wall)
    return {
        name: {
            "median_s": round(statistics.median(w), 3),
            "min_s": round(min(w), 3),
            "max_s": round(max(w), 3),
            "runs": runs,
            "last_stdout_tail": last[name],
        }
        for name, w in walls.items()
    }


def commands_for(tree: Path, frames: Path) -> dict[str, tuple[list[str], dict, Path]]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    which = subprocess.run([sys.executable, "-c", "import secagg; print(secagg.__file__)"], env=env,
                           cwd=tree, capture_output=True, text=True, check=True).stdout.strip()
    if not which.startswith(str(tree)):
        raise RuntimeError(f"secagg resolved to {which}, not to {tree}")
    subprocess.run([sys.executable, str(ROOT / "bench" / "coldstart.py"), "record", str(frames)],
                   env=env, cwd=tree, check=True)
    return {
        "simulate": ([sys.executable, "-m", "secagg", "simulate", "--clients", str(CLIENTS), "--dim", str(DIM)],
                     env, tree),
        "client": ([sys.executable, str(ROOT / "bench" / "coldstart.py"), "client", str(frames)], env, tree),
    }


def machine() -> dict:
    from bench import cpu_model  # here, not at the top: the client process imports only secagg

    model = cpu_model()
    versions = {}
    for name in ("numpy", "galois", "numba", "cryptography"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is just not reported
            pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def commit_of(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--", "secagg"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + (" (+ uncommitted changes in secagg/)" if dirty else "")


def write_report(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "coldstart.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# Cold start: whole-process wall time",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['affinity']} usable), Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        f"Median of {result['runs']} runs after one warm-up, timed from outside (exec to exit). "
        "Written by `python3 -m bench.coldstart`; before and after run in turn (A B A B ...). "
        f"Load average at the end: {result['load_average_after']} (the machine is shared).",
        "",
        "| process | " + " | ".join(result["trees"]) + " |",
        "|---|" + "---|" * len(result["trees"]),
    ]
    names = {
        "simulate": f"`secagg simulate --clients {CLIENTS} --dim {DIM}` (server and 10 clients)",
        "client": "one client, one round, from recorded frames (no server code)",
    }
    for key, text in names.items():
        cells = []
        for tree in result["trees"]:
            r = result["trees"][tree][key]
            cells.append(f"{r['median_s']:.2f} s ({r['min_s']:.2f}-{r['max_s']:.2f})")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    lines += ["", "Trees: " + "; ".join(f"{k} = {v['commit']}" for k, v in result["trees"].items()) + ".", ""]
    for tree, r in result["trees"].items():
        lines.append(f"Heavy modules loaded by the client process ({tree}): `{r['client']['last_stdout_tail']}`")
    (RESULTS / "coldstart.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", default="5a328ce", help="commit to compare against, or 'none'")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
        trees = {"after": ROOT}
        if args.before != "none":
            old = Path(tmp) / "before"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            trees = {"before": old, "after": ROOT}
        commands = {}
        for tree, path in trees.items():
            for key, command in commands_for(path, Path(tmp) / f"frames-{tree}.json").items():
                commands[(tree, key)] = command
        timed = time_processes(commands, args.runs)
        result_trees = {
            tree: {"commit": args.before if tree == "before" else commit_of(ROOT),
                   **{key: timed[(tree, key)] for key in ("simulate", "client")}}
            for tree in trees
        }
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    result = {"runs": args.runs, "machine": machine(), "load_average_after": load, "trees": result_trees}
    write_report(result)
    print((RESULTS / "coldstart.md").read_text())
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "client":
        client_round(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    else:
        sys.exit(main())
