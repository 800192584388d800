"""The in-process driver: one loop that moves frames between a server and its clients.

It serves the simulator, the tests and the examples, and it is the loop every real transport
(MQTT, Flower) repeats: deliver a frame with ``receive(frame, sender)``, post what comes back, and
when nothing is left in flight, the phase's deadline has passed: ``close_phase()``. It never
decodes a frame or looks at a message type.

It can also be a bad network (``Faults``): deliver frames twice, hold frames back until after the
phase they belong to closed, and deliver in random order. Clients on a dropout ``schedule`` go
silent from their stage on, judged by the server's public ``phase``; with ``announce_losses`` the
router tells the server at once (``peer_lost``, as an MQTT Last Will would), otherwise the
server finds out at the deadline. ``tamper(sender, recipient, frame)`` lets a test play a
malicious party: it returns the frames to deliver instead (none, one or several).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from secagg.errors import ConfigurationError, SecAggError
from secagg.protocol.rounds import STAGE_ORDER, Stage, phase_index
from secagg.protocol.seam import Outgoing

SERVER = 0


@dataclass(frozen=True, slots=True)
class Faults:
    """A network that delivers at least once, late and out of order. Probabilities per frame."""

    duplicate: float = 0.0
    delay: float = 0.0  # held back until the current phase has closed
    reorder: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("duplicate", "delay"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigurationError(f"fault probability {name} must lie in [0, 1], got {p}")

    @property
    def any(self) -> bool:
        return self.duplicate > 0 or self.delay > 0 or self.reorder


Tamper = Callable[[int, int, bytes], list[bytes]]


class Metered:
    """What a simulated round's driver measures (seconds and bytes per party, per phase; what
    clients refused; frame counts) and whom the dropout ``schedule`` silences: shared by
    ``InMemoryRouter`` and the process pool's ``secagg.sim.pool.PoolRouter``."""

    def __init__(self, server, schedule: Mapping[int, Stage] | None) -> None:
        self.server = server
        self.schedule = {int(c): Stage(s) for c, s in (schedule or {}).items()}
        self.seconds: dict[int, float] = defaultdict(float)
        self.phase_seconds: dict[str, dict[str, float]] = {}
        self.bytes_sent: dict[int, int] = defaultdict(int)
        self.bytes_received: dict[int, int] = defaultdict(int)
        self.refusals: dict[int, SecAggError] = {}
        self.counts = {"frames": 0, "duplicated": 0, "delayed": 0, "undelivered": 0}

    def _timed(self, party: int, call, *args):
        phase = self.server.phase.value
        t0 = time.perf_counter()
        try:
            return call(*args)
        finally:
            self._charge(party, phase, time.perf_counter() - t0)

    def _charge(self, party: int, phase: str, seconds: float) -> None:
        self.seconds[party] += seconds
        slot = self.phase_seconds.setdefault(phase, {"server": 0.0, "clients": 0.0})
        slot["server" if party == SERVER else "clients"] += seconds

    def _silent(self, client: int, phase) -> bool:
        stage = self.schedule.get(client)
        return stage is not None and STAGE_ORDER.index(stage) <= phase_index(phase)


class InMemoryRouter(Metered):
    """Run one round: ``run()`` returns when the server has a result or has aborted."""

    def __init__(
        self,
        server,
        clients: Mapping[int, object],
        *,
        schedule: Mapping[int, Stage] | None = None,
        faults: Faults = Faults(),
        announce_losses: bool = False,
        tamper: Tamper | None = None,
        transcript: list[tuple[str, int, int, bytes]] | None = None,
    ) -> None:
        super().__init__(server, schedule)
        self.clients = dict(clients)
        self.faults = faults
        self.announce_losses = announce_losses
        self.tamper = tamper
        self.transcript = transcript
        self._gen = np.random.default_rng(faults.seed)
        self._queue: deque[tuple[int, int, bytes, object]] = deque()
        self._late: list[tuple[int, int, bytes, object]] = []
        self._lost: set[int] = set()
        self._started = False

    # --- the loop -----------------------------------------------------------------------------

    def run(self, until=None) -> None:
        """Run the round to its end; or, with ``until`` (a ``Phase``), stop as soon as the server
        enters that phase, leaving its requests in flight (``pending()``): for tests that play
        the network between the two."""
        server = self.server
        if not self._started:
            self._started = True
            self._post(SERVER, self._timed(SERVER, server.start))
        while not server.finished:
            while self._queue and not server.finished:
                if until is not None and server.phase is until:
                    return
                self._deliver(self._pop())
            if server.finished:
                break
            if until is not None and server.phase is until:
                return
            self._post(SERVER, self._timed(SERVER, server.close_phase))
            self._release_late()
        # The server's last words (Abort notices), then whatever the network still held.
        self._release_late()
        while self._queue:
            self._deliver(self._pop())

    def pending(self) -> list[tuple[int, int, bytes]]:
        """Take the frames in flight, as (sender, recipient, frame); they will not be delivered."""
        items = [(s, r, f) for s, r, f, _ in self._queue]
        self._queue.clear()
        return items

    def deliver(self, sender: int, recipient: int, frame: bytes) -> None:
        """Deliver one frame now (a test playing the network), posting what comes back."""
        self._deliver((sender, recipient, frame, self.server.phase))

    # --- helpers ------------------------------------------------------------------------------

    def _post(self, sender: int, outgoing: list[Outgoing]) -> None:
        phase = self.server.phase
        batch = []
        for recipient, frame in outgoing:
            if self.transcript is not None:
                direction = "server->client" if sender == SERVER else "client->server"
                self.transcript.append((direction, sender, recipient, frame))
            frames = [frame] if self.tamper is None else self.tamper(sender, recipient, frame)
            for f in frames:
                self.counts["frames"] += 1
                copies = 2 if self._chance(self.faults.duplicate) else 1
                self.counts["duplicated"] += copies - 1
                for _ in range(copies):
                    item = (sender, recipient, f, phase)
                    if self._chance(self.faults.delay):
                        self.counts["delayed"] += 1
                        self._late.append(item)
                    else:
                        batch.append(item)
        # Depth first: what a delivery produced goes next, so a masked input reaches the server
        # right after its client made it and the router never holds n vectors in flight.
        self._queue.extendleft(reversed(batch))

    def _chance(self, p: float) -> bool:
        return p > 0 and self._gen.random() < p

    def _pop(self):
        if self.faults.reorder and len(self._queue) > 1:
            self._queue.rotate(-int(self._gen.integers(len(self._queue))))
        return self._queue.popleft()

    def _release_late(self) -> None:
        if self._late:
            if self.faults.reorder:
                self._gen.shuffle(self._late)
            self._queue.extend(self._late)
            self._late = []

    def _deliver(self, item) -> None:
        sender, recipient, frame, phase = item
        self.bytes_sent[sender] += len(frame)
        if recipient == SERVER:
            self.bytes_received[SERVER] += len(frame)
            self._post(SERVER, self._timed(SERVER, self.server.receive, frame, sender))
            return
        client = self.clients.get(recipient)
        if client is None or self._silent(recipient, phase):
            self.counts["undelivered"] += 1
            if client is not None and self.announce_losses and recipient not in self._lost:
                self._lost.add(recipient)
                self._post(SERVER, self._timed(SERVER, self.server.peer_lost, recipient))
            return
        self.bytes_received[recipient] += len(frame)
        try:
            replies = self._timed(recipient, client.receive, frame, sender)
        except SecAggError as exc:  # the client refused; the server sees it go silent
            self.refusals.setdefault(recipient, exc)
            return
        self._post(recipient, replies)
