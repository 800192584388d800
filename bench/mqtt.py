"""A round over loopback mosquitto with mutual TLS 1.3, against the in-process simulation of the
same round.

    python3 -m bench.mqtt [--points 100x100000,1000x10000] [--workers 2]

For each (n, d): write a deployment (CA, n client certificates), start mosquitto, start
``--workers`` processes that each run their share of the n clients as asyncio tasks (one TLS
connection per client), and run the server in this process. Reported: the round's wall time
from the server's first frame to its result, each phase's duration, the bytes the broker received
and sent ($SYS counters, MQTT packets without TLS), and the wall time of ``simulate`` (the same
n, d, no dropout, one process) on this machine in the same run. Writes
bench/results/mqtt.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import cpu_model, write_results

SEED = 3


def worker(args) -> int:
    """One worker process: clients ``args.first``..``args.last`` as asyncio tasks."""
    from secagg import Client
    from secagg.sim.scenario import make_input
    from secagg.transport.broker import BrokerFiles
    from secagg.transport.mqtt import Broker, Link, participate

    files = BrokerFiles.load(args.tls)

    async def one(c: int) -> None:
        broker = Broker(files.host, files.port, tls_context=files.client_tls_context(c), keepalive=60)
        client = Client(c, make_input(SEED, c, args.dim, 1.0))
        async with Link(broker, f"secagg-client-{c}", will_client=c, connect_timeout=120) as link:
            await participate(client, link, idle_timeout=600)
        if not client.state.value == "Done":
            print(f"client {c}: {client.state.value} {client.error or client.abort_reason}", file=sys.stderr)

    async def main() -> None:
        await asyncio.gather(*(one(c) for c in range(args.first, args.last + 1)))

    asyncio.run(main())
    return 0


async def _sys_bytes(broker) -> dict[str, int]:
    """The broker's $SYS byte counters (published every second, retained), read on a connection
    of their own with the server's certificate (its ACL may read $SYS)."""
    from secagg.transport.mqtt import connect

    wanted = {"$SYS/broker/bytes/received": "received", "$SYS/broker/bytes/sent": "sent"}
    out: dict[str, int] = {}
    async with connect(broker, "secagg-bench-sys", clean=True) as mqtt:
        await mqtt.subscribe("$SYS/broker/bytes/#", qos=0)
        async with asyncio.timeout(5):
            async for message in mqtt.messages:
                topic = str(message.topic)
                if topic in wanted:
                    out[wanted[topic]] = int(bytes(message.payload))
                if len(out) == 2:
                    break
    return out


def measure(n: int, d: int, workers: int) -> dict:
    from secagg import RoundConfig, Server, simulate
    from secagg.crypto import shamir
    from secagg.sim.scenario import make_input
    from secagg.transport.broker import Mosquitto, free_port, write_broker_config
    from secagg.transport.mqtt import Broker, Link, serve

    work = Path(tempfile.mkdtemp(prefix="secagg-bench-mqtt-"))
    t0 = time.perf_counter()
    files = write_broker_config(work / "broker", clients=range(1, n + 1), port=free_port(), persistence=False)
    setup_seconds = time.perf_counter() - t0
    shamir.warm_up(jit=True)
    config = RoundConfig.create(n, d, dropout_rate=0.05)
    with Mosquitto(files):
        bounds = np.linspace(1, n + 1, workers + 1).astype(int)
        procs = [subprocess.Popen([sys.executable, "-m", "bench.mqtt", "--worker", "--tls", str(files.directory),
                                   "--dim", str(d), "--first", str(lo), "--last", str(hi - 1)])
                 for lo, hi in zip(bounds[:-1], bounds[1:])]
        time.sleep(2.0 + n / 200)  # the clients connect and subscribe (not part of the round)

        async def run():
            server = Server(config)
            broker = Broker(files.host, files.port, tls_context=files.server_tls_context(), keepalive=60)
            async with Link(broker, "secagg-server") as link:
                before = await _sys_bytes(broker)
                start = time.perf_counter()
                logs = await serve(server, link, phase_timeout=300)
                seconds = time.perf_counter() - start
                await asyncio.sleep(1.5)
                after = await _sys_bytes(broker)
            return server, logs, seconds, before, after

        server, logs, seconds, before, after = asyncio.run(run())
        for p in procs:
            p.wait(timeout=120)
    result = server.result()
    truth = sum(make_input(SEED, c, d, 1.0) for c in result.contributors)
    exact = bool(np.allclose(result.values, truth, atol=n * config.quantizer.step))
    t0 = time.perf_counter()
    sim = simulate(n, d, dropout=0.0, seed=SEED)
    sim_seconds = time.perf_counter() - t0
    return {
        "clients": n, "dim": d, "workers": workers, "degree": config.degree, "threshold": config.threshold,
        "exact": exact and sim.exact, "contributors": len(result.contributors),
        "mqtt_round_seconds": seconds, "in_process_seconds": sim_seconds,
        "in_process_cpu_seconds": sim.server_seconds + sim.client_seconds_median * n,
        "phases": {g.phase: g.seconds for g in logs[:-1]},
        "broker_bytes_received": after["received"] - before["received"],
        "broker_bytes_sent": after["sent"] - before["sent"],
        "setup_seconds": setup_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="100x100000,1000x10000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--last", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    points = [tuple(int(v) for v in p.split("x")) for p in args.points.split(",")]
    rows = [measure(n, d, args.workers) for n, d in points]
    lines = ["# A round over MQTT (mosquitto, mutual TLS 1.3, loopback) against in-process", "",
             f"`python3 -m bench.mqtt --points {args.points} --workers {args.workers}` on {cpu_model()}: "
             "the server in one process, the clients as asyncio tasks in the worker processes, one TLS "
             "connection each; no dropouts.", "",
             "| n | d | k | t | exact | MQTT round s | in-process s | ratio | broker in MB | broker out MB | phases (s) |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
        lines.append(f"| {r['clients']:,} | {r['dim']:,} | {r['degree']} | {r['threshold']} | {r['exact']} | "
                     f"{r['mqtt_round_seconds']:.2f} | {r['in_process_seconds']:.2f} | "
                     f"x{r['mqtt_round_seconds'] / r['in_process_seconds']:.2f} | "
                     f"{r['broker_bytes_received'] / 1e6:.1f} | {r['broker_bytes_sent'] / 1e6:.1f} | {phases} |")
    write_results(args.out, "mqtt", rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
