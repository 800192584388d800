"""Rounds over MQTT: asyncio drivers around the sans-IO server and client (aiomqtt >= 2.5, < 3).

Theory of operation. The broker carries frames; the core decides everything. Topics
(protocol_spec/SPEC.md section 15):

- ``secagg/{session}/{round}/down/{client}``: the server's frames to one client;
- ``secagg/{session}/{round}/up/{client}``: one client's frames to the server;
- ``secagg/lost/{client}``: the client's presence. It publishes ``U`` and its connection's
  generation on every connect, and sets its Last Will (``L`` and that generation) when it
  connects, before it knows the session; the broker publishes the Will when the connection dies.
  The server drops the client (``peer_lost``) a short grace after a Will, unless a newer
  connection announced itself meanwhile (``Liveness``).

``{session}`` is the config's 16-byte session label in hex. The broker's ACL lets a client
publish only to its own up-topic and lost-topic and read only its own down-topic, and maps its
TLS certificate to its id, so the topic a frame arrives on names its sender. Every publish is QoS
1 (at least once) on a persistent session, so a frame survives a broker restart and may arrive
twice; the core ignores repeats (SPEC 5.3).

Deadlines: the server calls ``close_phase()`` when a phase has run ``phase_timeout`` seconds,
and a client gives up (``close_phase()``) when no request came for ``idle_timeout`` seconds, so
no party waits forever. Incoming messages go through a queue of our own, so a timeout never
drops one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from secagg.errors import ConfigurationError, SecAggError
from secagg.messages import SERVER_ID
from secagg.protocol.seam import Outgoing

TOPIC_ROOT = "secagg"
QOS = 1
# One frame is one MQTT message (no chunking): at most this many bytes, which must fit the
# broker's max_packet_size (secagg broker-config writes 64 MiB: d up to about 16 million
# coordinates at 32 bits).
MAX_FRAME_BYTES = 64 * 2**20 - 1024
ACK_TIMEOUT = 60.0  # seconds for the broker to acknowledge one QoS 1 publish, subscribe or unsubscribe


def _require_aiomqtt():
    try:
        import aiomqtt
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise ConfigurationError("the MQTT transport needs aiomqtt: pip install 'secagg[mqtt]'") from None
    return aiomqtt


def down_topic(session_id: bytes, round: int, client: int | str) -> str:
    return f"{TOPIC_ROOT}/{session_id.hex()}/{round}/down/{client}"


def up_topic(session_id: bytes, round: int, client: int | str) -> str:
    """(``client`` may be the wildcard "+".)"""
    return f"{TOPIC_ROOT}/{session_id.hex()}/{round}/up/{client}"


def lost_topic(client: int | str) -> str:
    return f"{TOPIC_ROOT}/lost/{client}"


def parse_topic(topic: str) -> tuple[str, int, str, int] | None:
    """(session hex, round, direction, client) of a round topic, ("", 0, "lost", client) of a
    Last Will topic, or None for anything else."""
    parts = topic.split("/")
    try:
        if len(parts) == 3 and parts[0] == TOPIC_ROOT and parts[1] == "lost":
            return "", 0, "lost", int(parts[2])
        if len(parts) == 5 and parts[0] == TOPIC_ROOT and parts[3] in ("up", "down"):
            return parts[1], int(parts[2]), parts[3], int(parts[4])
    except ValueError:
        return None
    return None


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the broker is and how to reach it: ``tls_context`` from ``transport.broker``."""

    host: str
    port: int
    tls_context: object | None = None
    keepalive: int = 10


def presence(kind: bytes, generation: int) -> bytes:
    """A payload on ``secagg/lost/{client}``: b"L" (the Last Will: connection ``generation`` is
    gone) or b"U" (connection ``generation`` is up), then the generation as u64. Generations grow
    with each connection (nanoseconds of the clock), so a Will that a restarted broker publishes
    late for an old connection is told apart from a real loss."""
    return kind + generation.to_bytes(8, "big")


def connect(broker: Broker, identity: str, *, will_client: int | None = None, clean: bool = False,
            timeout: float = 10.0, generation: int = 0):
    """An aiomqtt client for ``identity`` (used as the MQTT client id), with a persistent
    session unless ``clean``, and, for a secagg client, its Last Will on ``secagg/lost/{id}``."""
    aiomqtt = _require_aiomqtt()
    will = None if will_client is None else aiomqtt.Will(lost_topic(will_client), presence(b"L", generation), qos=QOS)
    client = aiomqtt.Client(
        broker.host, broker.port, identifier=identity, tls_context=broker.tls_context, will=will,
        clean_session=clean, keepalive=broker.keepalive, timeout=timeout,
    )
    client.pending_calls_threshold = 1 << 20  # a round publishes n frames at once, by design
    return client


class BrokerUnreachable(ConnectionError):
    """The broker could not be reached (or not again) within the time allowed."""


async def _finished_before(task: asyncio.Future, lost: asyncio.Future, timeout: float,
                           late: str) -> bool:
    """Wait for ``task`` (a request to the broker) or ``lost`` (its connection's end), at most
    ``timeout`` seconds. True: ``task`` finished first (the caller reads its result). False: the
    connection ended first, and ``task`` is cancelled. Time running out cancels ``task`` and
    raises ``BrokerUnreachable(late)``."""
    done, _ = await asyncio.wait((task, lost), timeout=max(timeout, 0.001), return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if not done:
        raise BrokerUnreachable(late)
    return False


class Link:
    """One party's connection to the broker, kept up across broker restarts and network faults.

    A task connects (persistent session, QoS 1 subscriptions), copies every message into a queue
    of ours, and on a lost connection reconnects every ``retry_seconds``; the broker then
    delivers what it queued for the session meanwhile. ``publish`` waits for the connection and
    publishes again what a dropped connection may have lost (a repeat is harmless: SPEC 5.3).
    ``next(timeout)`` returns the next message or None: a timed-out ``get`` on an asyncio queue
    takes nothing, so no message is lost to a deadline.
    """

    def __init__(self, broker: Broker, identity: str, *, will_client: int | None = None,
                 connect_timeout: float = 10.0, retry_seconds: float = 0.5) -> None:
        self.broker, self.identity, self.will_client = broker, identity, will_client
        self.connect_timeout, self.retry_seconds = connect_timeout, retry_seconds
        self.queue: asyncio.Queue = asyncio.Queue()
        self.reconnects = 0
        self.last_error: BaseException | None = None
        self._subscriptions: dict[str, None] = {}  # in order, each once: renewed on every reconnect
        self._mqtt = None
        self._up = asyncio.Event()
        self._lost: asyncio.Future | None = None  # resolved when the current connection ends
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Link:
        self._task = asyncio.create_task(self._run())
        await self._wait_up(self.connect_timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _wait_up(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._up.wait(), max(timeout, 0.001))
        except TimeoutError:
            raise BrokerUnreachable(
                f"{self.identity}: cannot reach the MQTT broker at {self.broker.host}:{self.broker.port} "
                f"within {timeout:g} s ({self.last_error or 'no answer'})") from None

    async def _run(self) -> None:
        aiomqtt = _require_aiomqtt()
        while True:
            generation = time.time_ns()
            try:
                # A refused connection shows in aiomqtt only as a timeout: keep it short, so a
                # restarted broker is found again within about a second.
                async with connect(self.broker, self.identity, will_client=self.will_client,
                                   timeout=min(self.connect_timeout, 1.5), generation=generation) as mqtt:
                    for topic in self._subscriptions:
                        await mqtt.subscribe(topic, qos=QOS, timeout=ACK_TIMEOUT)
                    if self.will_client is not None:
                        await mqtt.publish(lost_topic(self.will_client), presence(b"U", generation), qos=QOS)
                    self._mqtt = mqtt
                    self._lost = asyncio.get_running_loop().create_future()
                    self._up.set()
                    async for message in mqtt.messages:
                        self.queue.put_nowait(message)
            except aiomqtt.MqttError as exc:
                self.last_error = exc
            finally:
                self._mqtt = None
                self._up.clear()
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(None)
            self.reconnects += 1
            await asyncio.sleep(self.retry_seconds)

    async def subscribe(self, topic: str) -> None:
        """Subscribe (QoS 1) now if connected, and on every reconnect."""
        if topic in self._subscriptions:
            return
        self._subscriptions[topic] = None
        await self._acknowledged(lambda mqtt: mqtt.subscribe(topic, qos=QOS, timeout=math.inf), f"SUBSCRIBE {topic}")

    async def unsubscribe(self, topic: str) -> None:
        """Drop a subscription (a finished round's topic), here and at the broker if connected;
        a reconnect does not renew it."""
        if topic not in self._subscriptions:
            return
        del self._subscriptions[topic]
        await self._acknowledged(lambda mqtt: mqtt.unsubscribe(topic, timeout=math.inf), f"UNSUBSCRIBE {topic}")

    async def _acknowledged(self, request, what: str) -> None:
        """``request(mqtt)`` on the current connection, if any, until the broker acknowledges it
        (at most ``ACK_TIMEOUT`` seconds: ``BrokerUnreachable``). If the connection fails under it,
        nothing more is owed: a reconnect subscribes to exactly the topics in ``_subscriptions``."""
        aiomqtt = _require_aiomqtt()
        mqtt, lost = self._mqtt, self._lost
        if mqtt is None:
            return
        asking = asyncio.ensure_future(request(mqtt))
        late = f"{self.identity}: the broker did not acknowledge {what} within {ACK_TIMEOUT:g} s"
        if await _finished_before(asking, lost, ACK_TIMEOUT, late):
            if isinstance(asking.exception(), aiomqtt.MqttError):  # paho had lost the connection
                self.last_error = asking.exception()
                return
            asking.result()

    async def publish(self, items: list[tuple[str, bytes]], *, max_frame_bytes: int = MAX_FRAME_BYTES,
                      retain: bool = False, timeout: float = 60.0) -> None:
        """Publish every (topic, frame), QoS 1; if the connection drops, wait for it (at most
        ``timeout`` seconds in all) and publish them again."""
        aiomqtt = _require_aiomqtt()
        for topic, frame in items:
            if len(frame) > max_frame_bytes:
                raise ConfigurationError(
                    f"a {len(frame):,}-byte frame for {topic} exceeds the broker's packet limit of "
                    f"{max_frame_bytes:,} bytes: raise max_packet_size (secagg broker-config) or lower d or b")
        deadline = time.monotonic() + timeout
        while items:
            await self._wait_up(deadline - time.monotonic())
            mqtt, lost = self._mqtt, self._lost
            sending = asyncio.ensure_future(asyncio.gather(
                *(mqtt.publish(t, f, qos=QOS, retain=retain, timeout=ACK_TIMEOUT) for t, f in items)))
            late = (f"{self.identity}: the broker did not acknowledge {len(items)} frame(s) within "
                    f"{timeout:g} s ({self.last_error or 'no answer'})")
            if await _finished_before(sending, lost, deadline - time.monotonic(), late):
                try:
                    sending.result()
                    return
                except aiomqtt.MqttError as exc:  # the connection failed under it: send again
                    self.last_error = exc
                    await asyncio.sleep(self.retry_seconds)
            # Otherwise the connection was lost before the broker acknowledged everything
            # (aiomqtt's new session cannot resend the old one's in-flight messages): again.

    async def next(self, timeout: float):
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class Liveness:
    """The server's view of ``secagg/lost/{client}``: a Will (b"L" + generation) drops the client
    ``grace`` seconds later, unless it announced a newer connection (b"U" + a larger generation)
    by then. A Will for a generation older than the client's newest connection is stale."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.up: dict[int, int] = {}  # client -> newest connection generation
        self.lost: dict[int, tuple[int, float]] = {}  # client -> (Will's generation, drop time)

    def note(self, client: int, payload: bytes, now: float) -> None:
        if len(payload) != 9 or payload[:1] not in (b"L", b"U"):
            return
        generation = int.from_bytes(payload[1:], "big")
        if payload[:1] == b"U":
            self.up[client] = max(self.up.get(client, 0), generation)
            if client in self.lost and self.lost[client][0] < generation:
                del self.lost[client]
        elif generation >= self.up.get(client, 0) and client not in self.lost:
            self.lost[client] = (generation, now + self.grace)

    def due(self, now: float) -> list[int]:
        gone = [c for c, (_, when) in self.lost.items() if when <= now]
        for c in gone:
            del self.lost[c]
        return gone

    def next_due(self) -> float:
        return min((when for _, when in self.lost.values()), default=float("inf"))


@dataclass
class PhaseLog:
    """What the server driver saw per phase: arrivals and how the phase ended."""

    phase: str
    started: float
    arrivals: int = 0
    seconds: float = 0.0
    closed_by_deadline: bool = False


async def serve(server, link: Link, *, phase_timeout: float = 30.0, max_frame_bytes: int = MAX_FRAME_BYTES,
                lost_grace: float = 2.0,
                on_event: Callable[[str, PhaseLog], None] | None = None) -> list[PhaseLog]:
    """Run one round of ``server`` over ``link`` until it has a result or aborted
    (``server.result()`` then says which). Returns the per-phase log; ``on_event("arrival" |
    "phase", log)`` feeds a progress display. A broker that stays unreachable past a phase's
    deadline raises ``BrokerUnreachable``.

    A client's Last Will drops it (``peer_lost``) ``lost_grace`` seconds later unless the client
    announces a newer connection first: a broker restart publishes the Wills of connections that
    were about to come back.

    The AdvertiseKeysRequests are published retained, so a client that subscribes after the
    round started still finds its invitation; they are cleared when the round ends."""
    cfg = server.config
    session, rnd = cfg.session_id, cfg.round

    def topics(outgoing: list[Outgoing]) -> list[tuple[str, bytes]]:
        return [(down_topic(session, rnd, o.recipient), o.frame) for o in outgoing]

    arrivals = up_topic(session, rnd, "+")
    await link.subscribe(arrivals)
    await link.subscribe(lost_topic("+"))
    logs: list[PhaseLog] = []

    def new_phase() -> PhaseLog:
        if logs:
            logs[-1].seconds = time.monotonic() - logs[-1].started
        logs.append(PhaseLog(server.phase.value, time.monotonic()))
        if on_event:
            on_event("phase", logs[-1])
        return logs[-1]

    log = new_phase()

    async def send(out) -> None:
        await link.publish(topics(out), max_frame_bytes=max_frame_bytes,
                           timeout=max(log.started + phase_timeout - time.monotonic(), 1.0))

    invitations = topics(server.start())
    await link.publish(invitations, max_frame_bytes=max_frame_bytes, retain=True, timeout=phase_timeout)
    liveness = Liveness(lost_grace)
    held: collections.deque = collections.deque()  # frames read past to find announcements, in order

    def noted_presence(message) -> bool:
        """Note ``message`` if it is a Will or an announcement (``secagg/lost/{client}``)."""
        parsed = parse_topic(str(message.topic))
        if parsed is None or parsed[2] != "lost":
            return False
        liveness.note(parsed[3], bytes(message.payload), time.monotonic())
        return True

    while not server.finished:
        deadline = log.started + phase_timeout
        if liveness.next_due() <= time.monotonic():
            # A Will's grace ended. The client's announcement of a newer connection may already
            # be here behind other frames: read what has arrived (no more) before dropping it.
            while not link.queue.empty():
                message = link.queue.get_nowait()
                if not noted_presence(message):
                    held.append(message)
        due = liveness.due(time.monotonic())
        if due:
            out = [frame for c in due for frame in server.peer_lost(c)]
        else:
            message = held.popleft() if held else await link.next(
                min(deadline, liveness.next_due()) - time.monotonic())
            if message is None:
                if time.monotonic() < deadline:
                    continue  # a Will's grace ended: dropped at the top of the loop
                log.closed_by_deadline = True
                out = server.close_phase()
            else:
                if noted_presence(message):
                    continue
                parsed = parse_topic(str(message.topic))
                if parsed is None:
                    continue
                _, _, direction, client = parsed
                if direction != "up" or client == SERVER_ID:
                    continue
                log.arrivals += 1
                if on_event:
                    on_event("arrival", log)
                out = server.receive(bytes(message.payload), client)
        if server.phase.value != log.phase:
            log = new_phase()
        await send(out)
    await link.publish([(topic, b"") for topic, _ in invitations], retain=True, timeout=phase_timeout)
    await link.unsubscribe(arrivals)
    logs[-1].seconds = time.monotonic() - logs[-1].started
    return logs


async def participate(client, link: Link, *, idle_timeout: float = 120.0,
                      max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
    """Run ``client`` over ``link`` until it is done, refused or gave up. A refusal is kept in
    ``client.error`` (not raised): the client simply stops answering."""
    await link.subscribe(f"{TOPIC_ROOT}/+/+/down/{client.id}")  # the session is not known yet
    while not client.finished:
        message = await link.next(idle_timeout)
        if message is None:
            client.close_phase()
            break
        parsed = parse_topic(str(message.topic))
        if parsed is None or parsed[2] != "down" or parsed[3] != client.id or not message.payload:
            continue  # not ours, or a cleared invitation
        session_hex, rnd, _, _ = parsed
        try:
            out = client.receive(bytes(message.payload), SERVER_ID)
        except SecAggError:
            break  # kept in client.error; the server sees it go silent
        topic = up_topic(bytes.fromhex(session_hex), rnd, client.id)
        await link.publish([(topic, o.frame) for o in out], max_frame_bytes=max_frame_bytes,
                           timeout=idle_timeout)


__all__ = ["Broker", "BrokerUnreachable", "Link", "PhaseLog", "connect", "down_topic", "lost_topic", "parse_topic", "participate",
           "serve", "up_topic"]
