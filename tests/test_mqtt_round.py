"""Rounds over a real mosquitto with mutual TLS 1.3 (SPEC section 15): in one process, and with
each client a separate ``secagg client`` process, some of them killed mid-round. Every test
bounds its time; the broker fixture stops mosquitto and checks that no process is left."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from secagg import Client, RoundConfig, Server
from secagg.errors import RoundAborted
from secagg.transport.mqtt import Broker, Link, participate, serve

N, D = 8, 64
ROOT = Path(__file__).resolve().parents[1]


def _inputs(n: int = N, d: int = D) -> dict[int, np.ndarray]:
    gen = np.random.default_rng(11)
    return {c: gen.uniform(-1, 1, d) for c in range(1, n + 1)}


def _broker(broker, who) -> Broker:
    ctx = broker.files.server_tls_context() if who == 0 else broker.files.client_tls_context(who)
    return Broker(broker.host, broker.port, tls_context=ctx)


# Phases close on arrivals; these deadlines only bound a loaded machine's worst case (a test that
# needs a phase to close by its deadline sets its own).
async def _round(broker, config, inputs, *, phase_timeout=30.0, lost_grace=2.0, clients=None, server=None):
    server = server or Server(config)
    clients = clients or {c: Client(c, inputs[c]) for c in config.clients}

    async def run_client(c):
        async with Link(_broker(broker, c), f"secagg-client-{c}", will_client=c) as link:
            await participate(clients[c], link, idle_timeout=phase_timeout * 3)

    async def run_server():
        async with Link(_broker(broker, 0), "secagg-server") as link:
            return await serve(server, link, phase_timeout=phase_timeout, lost_grace=lost_grace)

    logs, *_ = await asyncio.wait_for(asyncio.gather(run_server(), *(run_client(c) for c in clients)), 120)
    return server, clients, logs


def test_a_round_over_mqtt_with_mutual_tls_is_exact(broker):
    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)
    server, clients, logs = asyncio.run(_round(broker, config, inputs))
    result = server.result()
    assert result.contributors == tuple(range(1, N + 1))
    assert np.allclose(result.values, sum(inputs.values()), atol=N * config.quantizer.step)
    assert [g.phase for g in logs[:-1]] == ["AdvertiseKeys", "ShareKeys", "MaskedInput", "Unmask"]
    assert not any(g.closed_by_deadline for g in logs)  # every phase closed on arrivals
    assert all(c.state.value == "Done" for c in clients.values())


def test_a_client_that_joins_late_finds_its_retained_invitation(broker):
    """The AdvertiseKeysRequest is retained: client 8 connects after the round started."""
    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)

    async def main():
        server = Server(config)
        clients = {c: Client(c, inputs[c]) for c in config.clients}

        async def run_client(c, delay):
            await asyncio.sleep(delay)
            async with Link(_broker(broker, c), f"secagg-client-{c}", will_client=c) as m:
                await participate(clients[c], m, idle_timeout=60)

        async def run_server():
            async with Link(_broker(broker, 0), "secagg-server") as m:
                await serve(server, m, phase_timeout=30)

        await asyncio.wait_for(asyncio.gather(
            run_server(), *(run_client(c, 1.0 if c == 8 else 0.0) for c in config.clients)), 120)
        return server

    server = asyncio.run(main())
    assert 8 in server.result().contributors


# --- separate processes, killed mid-round ---------------------------------------------------------


def _spawn_clients(broker, tmp_path, inputs, crash: dict[int, str], idle_timeout=60, extra=lambda c: []):
    """One ``secagg client`` process per input; ``extra(c)``: more arguments for client c."""
    procs = {}
    for c, x in inputs.items():
        path = tmp_path / f"input-{c}.npy"
        np.save(path, x)
        cmd = [sys.executable, "-m", "secagg", "client", "--broker", f"{broker.host}:{broker.port}",
               "--tls", str(broker.files.directory), "--id", str(c), "--input", str(path),
               "--idle-timeout", str(idle_timeout)]
        if c in crash:
            cmd += ["--crash-at", crash[c]]
        cmd += extra(c)
        procs[c] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    return procs


def _reap(procs, timeout=120):
    out = {}
    try:
        for c, p in procs.items():
            stdout, stderr = p.communicate(timeout=timeout)
            out[c] = (p.returncode, stderr.decode())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "unmask"])
def test_a_client_process_killed_in_each_phase(broker, tmp_path, stage):
    """Client 3 dies abruptly (no DISCONNECT) when that phase's request arrives: the broker
    publishes its Last Will, the server drops it at once (no deadline wait), and the round ends
    with the exact sum of the others or, when it dies at Unmask, with its input still in the sum."""
    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)
    procs = _spawn_clients(broker, tmp_path, inputs, {3: stage})

    async def main():
        server = Server(config)
        async with Link(_broker(broker, 0), "secagg-server") as link:
            logs = await asyncio.wait_for(serve(server, link, phase_timeout=40), 150)
        return server, logs

    server, logs = asyncio.run(main())
    codes = _reap(procs)
    assert codes[3][0] == 9  # it really died there
    assert all(code == 0 for c, (code, _) in codes.items() if c != 3), codes
    assert not any(g.closed_by_deadline for g in logs), "the Last Will should end the wait"
    result = server.result()
    expected = {1, 2, 4, 5, 6, 7, 8} | ({3} if stage == "unmask" else set())
    assert set(result.contributors) == expected
    truth = sum(inputs[c] for c in result.contributors)
    assert np.allclose(result.values, truth, atol=N * config.quantizer.step)


def test_secagg_serve_and_client_processes_print_the_exact_sum(broker, tmp_path):
    inputs = _inputs()
    procs = _spawn_clients(broker, tmp_path, inputs, {})
    serve_cmd = [sys.executable, "-m", "secagg", "serve", "--broker", f"{broker.host}:{broker.port}",
                 "--tls", str(broker.files.directory), "--clients", str(N), "--dim", str(D),
                 "--dropout-rate", "0.2", "--phase-timeout", "40", "--json", "--out", str(tmp_path / "sums")]
    try:
        served = subprocess.run(serve_cmd, capture_output=True, text=True, timeout=150, cwd=ROOT)
    finally:
        codes = _reap(procs)
    assert served.returncode == 0, served.stderr
    report = json.loads(served.stdout.splitlines()[-1])
    assert report["aborted"] is False and report["contributors"] == list(range(1, N + 1))
    total = np.load(tmp_path / "sums" / "round-0.npy")
    assert np.allclose(total, sum(inputs.values()), atol=1e-5)
    assert all(code == 0 for code, _ in codes.values()), codes


def test_a_round_aborts_by_name_when_too_many_die(broker, tmp_path):
    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)  # t = ceil(2(n-1)/3) = 5
    procs = _spawn_clients(broker, tmp_path, inputs, {c: "masked" for c in (1, 2, 3, 4)})

    async def main():
        server = Server(config)
        async with Link(_broker(broker, 0), "secagg-server") as link:
            await asyncio.wait_for(serve(server, link, phase_timeout=40), 150)
        return server

    server = asyncio.run(main())
    codes = _reap(procs)
    with pytest.raises(RoundAborted) as info:
        server.result()
    assert "only 4 clients remain after MaskedInput; at least 5 are required" in info.value.reason
    for c in (5, 6, 7, 8):  # the survivors were told, and said so
        assert codes[c][0] == 3 and "only 4 clients remain" in codes[c][1], codes[c]


# --- the network misbehaves --------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["ShareKeys", "MaskedInput", "Unmask"])
def test_the_broker_restarts_mid_round_and_the_round_completes(broker, phase):
    """mosquitto is stopped as the round enters ``phase`` and started again a second later:
    persistent sessions keep the QoS 1 frames, every party reconnects and publishes again what it
    could not deliver, and the core ignores the repeats. The sum is exact."""
    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)
    server = Server(config)

    async def main():
        # A restarted broker publishes the Wills of every connection it had: each party's
        # announcement must beat its Will's grace, which a loaded machine may need seconds for.
        task = asyncio.ensure_future(_round(broker, config, inputs, phase_timeout=30, lost_grace=10, server=server))
        while server.phase.value != phase and not task.done():
            await asyncio.sleep(0.002)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(broker.start)
        return await asyncio.wait_for(task, 90)

    _, clients, logs = asyncio.run(main())
    result = server.result()
    truth = sum(inputs[c] for c in result.contributors)
    assert np.allclose(result.values, truth, atol=N * config.quantizer.step)
    assert result.contributors == tuple(range(1, N + 1))


def test_an_unreachable_broker_is_a_clear_error_not_a_hang(tmp_path, broker_files):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(4))
    from secagg.transport.broker import free_port

    done = subprocess.run(
        [sys.executable, "-m", "secagg", "client", "--broker", f"127.0.0.1:{free_port()}",
         "--tls", str(broker_files.directory), "--id", "1", "--input", str(path), "--connect-timeout", "2"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "cannot reach the MQTT broker at 127.0.0.1:" in done.stderr and "within 2 s" in done.stderr


def test_a_client_that_floods_garbage_and_oversized_frames_is_excluded_and_the_round_goes_on(broker):
    """Client 8 runs no protocol: it floods its own up topic with garbage and sends one frame
    past the broker's packet limit (the broker cuts it off). The server excludes it by name
    (a malformed frame) and the others' sum is exact."""
    from secagg.transport.mqtt import connect, down_topic, up_topic

    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)

    async def rogue():
        async with connect(_broker(broker, 8), "secagg-client-8", clean=True) as mqtt:
            # Its invitation (retained) shows the server is listening on the up topics.
            await mqtt.subscribe(down_topic(config.session_id, config.round, 8), qos=1)
            await asyncio.wait_for(anext(aiter(mqtt.messages)), 30)
            for i in range(200):
                await mqtt.publish(up_topic(config.session_id, config.round, 8), b"\xff" * (i + 1), qos=1)
            with __import__("contextlib").suppress(Exception):
                await mqtt.publish(up_topic(config.session_id, config.round, 8), bytes(65 * 2**20), qos=1)

    async def main():
        clients = {c: Client(c, inputs[c]) for c in range(1, N)}
        task = asyncio.ensure_future(_round(broker, config, inputs, phase_timeout=10, clients=clients))
        await rogue()
        return await asyncio.wait_for(task, 90)

    server, clients, logs = asyncio.run(main())
    assert "malformed" in str(server.excluded[8]).lower()
    result = server.result()
    assert 8 not in result.contributors and len(result.contributors) == N - 1
    truth = sum(inputs[c] for c in result.contributors)
    assert np.allclose(result.values, truth, atol=N * config.quantizer.step)


def test_a_client_whose_connection_drops_reconnects_and_stays_in_the_round(broker):
    """Client 3's TCP connection is cut while the clients send their masked inputs. The broker
    publishes its Last Will; the client reconnects at once and announces the newer connection,
    which cancels the drop within the grace; its frames, resent, arrive; the sum is exact."""
    import socket

    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)
    server = Server(config)
    clients = {c: Client(c, inputs[c]) for c in config.clients}
    links: dict[int, Link] = {}

    async def run_client(c):
        async with Link(_broker(broker, c), f"secagg-client-{c}", will_client=c) as link:
            links[c] = link
            await participate(clients[c], link, idle_timeout=30)

    async def run_server():
        async with Link(_broker(broker, 0), "secagg-server") as link:
            # The grace must cover the reconnect (0.5 s retry, TLS, resubscribe) on a loaded
            # machine; without the announcement client 3 would still go 10 s after its Will.
            return await serve(server, link, phase_timeout=30, lost_grace=10)

    async def main():
        task = asyncio.gather(run_server(), *(run_client(c) for c in config.clients))
        while server.phase.value != "MaskedInput":
            await asyncio.sleep(0.002)
        links[3]._mqtt._client.socket().shutdown(socket.SHUT_RDWR)  # the network cuts it
        logs, *_ = await asyncio.wait_for(task, 120)
        return logs

    logs = asyncio.run(main())
    assert links[3].reconnects >= 1
    result = server.result()
    assert result.contributors == tuple(range(1, N + 1))
    assert np.allclose(result.values, sum(inputs.values()), atol=N * config.quantizer.step)
    assert not any(g.closed_by_deadline for g in logs)


def test_a_subscription_made_while_the_broker_is_down_is_made_when_it_returns(broker):
    """``Link.subscribe`` with the broker gone neither raises nor hangs: the topic is kept, and
    the reconnect subscribes to it before the link counts as up again."""
    from secagg.transport.mqtt import up_topic

    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)
    topic = up_topic(config.session_id, config.round, 1)

    async def main():
        async with Link(_broker(broker, 0), "secagg-server") as server:
            await asyncio.to_thread(broker.stop)
            await asyncio.wait_for(server.subscribe(up_topic(config.session_id, config.round, "+")), 30)
            await asyncio.to_thread(broker.start)
            await server._wait_up(30)
            async with Link(_broker(broker, 1), "secagg-client-1") as one:
                await one.publish([(topic, b"frame")], timeout=30)
            message = await server.next(10)
        return message

    message = asyncio.run(asyncio.wait_for(main(), 90))
    assert message is not None and (str(message.topic), bytes(message.payload)) == (topic, b"frame")


@pytest.mark.parametrize("request_kind", ["subscribe", "publish"])
def test_a_broker_that_stops_answering_on_a_live_connection_is_a_clear_error(broker, monkeypatch, request_kind):
    """mosquitto paused (SIGSTOP): the TCP connection stays up but nothing is acknowledged. A
    subscribe waits ACK_TIMEOUT (lowered here), a publish its own timeout; then BrokerUnreachable
    names what went unacknowledged, never a hang and never a bare MqttError."""
    import signal

    from secagg.transport import mqtt
    from secagg.transport.mqtt import BrokerUnreachable, up_topic

    monkeypatch.setattr(mqtt, "ACK_TIMEOUT", 1.0)
    topic = up_topic(bytes(16), 0, 1)

    async def main():
        async with Link(_broker(broker, 1), "secagg-client-1") as link:
            broker.process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(BrokerUnreachable) as info:
                    if request_kind == "subscribe":
                        await link.subscribe("secagg/+/+/down/1")
                    else:
                        await link.publish([(topic, b"frame")], timeout=1.0)
            finally:
                broker.process.send_signal(signal.SIGCONT)
        return str(info.value)

    message = asyncio.run(asyncio.wait_for(main(), 60))
    assert "secagg-client-1: the broker did not acknowledge" in message
    assert ("SUBSCRIBE secagg/+/+/down/1 within 1 s" if request_kind == "subscribe" else "1 frame(s) within 1 s") in message


@pytest.mark.parametrize("announced", [True, False])
def test_an_announcement_queued_behind_frames_cancels_a_drop_whose_grace_ended(announced, monkeypatch):
    """The driver reads what has already arrived before it drops a client whose Will's grace
    ended: client 3's announcement of a newer connection, queued behind other frames while the
    server was busy, keeps it in the round; without one it is dropped. (The network is replaced
    by the link's own queue, filled in that order; nothing is published.)"""
    from types import SimpleNamespace

    from secagg.transport.mqtt import lost_topic, presence

    class Offline(Link):
        async def publish(self, items, **kw) -> None:
            pass

    server = Server(RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True))
    dropped = []
    peer_lost = server.peer_lost
    monkeypatch.setattr(server, "peer_lost", lambda c: dropped.append(c) or peer_lost(c))
    link = Offline(Broker("127.0.0.1", 1), "secagg-server")
    frames = [(lost_topic(3), presence(b"L", 5))] + [("elsewhere/x", b"frame")] * 3
    frames += [(lost_topic(3), presence(b"U", 6))] if announced else []
    for topic, payload in frames:
        link.queue.put_nowait(SimpleNamespace(topic=topic, payload=payload))
    asyncio.run(asyncio.wait_for(serve(server, link, phase_timeout=0.5, lost_grace=0.0), 20))
    assert dropped == ([] if announced else [3])
    assert link.queue.empty()  # every frame read, the held ones too


class DuplicatingLink(Link):
    """A network that delivers every frame twice, the second copy late."""

    async def publish(self, items, **kw):
        await super().publish(items, **kw)
        await asyncio.sleep(0.05)
        await super().publish(items, **kw)


def test_duplicated_and_delayed_frames_over_mqtt_are_ignored_and_counted(broker):
    inputs = _inputs()
    config = RoundConfig.create(N, D, dropout_rate=0.2, full_graph=True)
    server = Server(config)
    clients = {c: Client(c, inputs[c]) for c in config.clients}

    async def run_client(c):
        async with DuplicatingLink(_broker(broker, c), f"secagg-client-{c}", will_client=c) as link:
            await participate(clients[c], link, idle_timeout=30)

    async def run_server():
        async with DuplicatingLink(_broker(broker, 0), "secagg-server") as link:
            return await serve(server, link, phase_timeout=20)

    async def main():
        await asyncio.wait_for(asyncio.gather(run_server(), *(run_client(c) for c in config.clients)), 60)

    asyncio.run(main())
    result = server.result()
    assert result.contributors == tuple(range(1, N + 1))
    assert np.allclose(result.values, sum(inputs.values()), atol=N * config.quantizer.step)
    assert sum(server.ignored.as_dict().values()) > 0  # the repeats reached it and were counted
    assert all(c.state.value == "Done" for c in clients.values())


def test_an_authenticated_round_over_mqtt_from_the_command_line_and_its_replay_refused(tmp_path, mosquitto_binary):
    """The whole deployment by CLI: broker-config with a registry and an operator key, the
    operator signs the round (sign-rounds), the server relays it (serve --signed-rounds, it never
    holds the operator key), each client checks it and every advert (client
    --operator-public-key --registry --ledger). Then the server replays the same signed round:
    every client refuses it from its ledger, and the server reports an abort."""
    from secagg.transport.broker import BrokerFiles, Mosquitto, free_port

    deploy = tmp_path / "deploy"
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "secagg", *a], capture_output=True,  # noqa: E731
                                          text=True, timeout=120, cwd=ROOT, **kw)
    made = run("broker-config", "--out", str(deploy), "--clients", str(N), "--port", str(free_port()),
               "--registry", "--operator")
    assert made.returncode == 0, made.stderr
    signed = run("sign-rounds", "--operator-key", str(deploy / "operator" / "operator-ed25519.pem"),
                 "--clients", str(N), "--dim", str(D), "--dropout-rate", "0.2", "--out", str(tmp_path / "rounds"))
    assert signed.returncode == 0, signed.stderr
    files = BrokerFiles.load(deploy)
    inputs = _inputs()
    auth = ["--operator-public-key", str(deploy / "operator" / "operator-ed25519.pub.pem"),
            "--registry", str(deploy / "registry.db")]

    def one_round(broker, phase_timeout):
        procs = _spawn_clients(broker, tmp_path, inputs, {},
                               extra=lambda c: [*auth, "--ledger", str(tmp_path / f"ledger-{c}.db")])
        try:
            served = run("serve", "--broker", f"{files.host}:{files.port}", "--tls", str(deploy),
                         "--clients", str(N), "--dim", str(D), "--signed-rounds", str(tmp_path / "rounds"),
                         "--registry", str(deploy / "registry.db"), "--phase-timeout", str(phase_timeout), "--json",
                         "--out", str(tmp_path / "sums"))
        finally:
            codes = _reap(procs)
        return served, codes

    with Mosquitto(files, binary=mosquitto_binary) as broker:
        served, codes = one_round(broker, 40)
        assert served.returncode == 0, served.stderr
        report = json.loads(served.stdout.splitlines()[-1])
        assert report["authenticated"] is True and report["contributors"] == list(range(1, N + 1))
        assert np.allclose(np.load(tmp_path / "sums" / "round-0.npy"), sum(inputs.values()), atol=1e-5)
        assert all(code == 0 for code, _ in codes.values()), codes

        replayed, codes = one_round(broker, 10)  # every client refuses: it ends by this deadline
    assert replayed.returncode == 3 and json.loads(replayed.stdout.splitlines()[-1])["aborted"]
    for c, (code, err) in codes.items():
        assert code == 4 and "ReplayedRound" not in err and "already took part" in err, (c, err)
