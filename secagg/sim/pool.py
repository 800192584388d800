"""Simulated clients on a process pool: the driver loop of ``InMemoryRouter``, with the clients
living in worker processes and the server in this one.

Theory of operation. Each worker process owns a contiguous block of client ids. It makes its
clients itself, from plain parameters (ids, the seed of the test data, the label of deterministic
randomness or none for the OS CSPRNG), so no client, key or share ever crosses a process boundary.
What crosses is bytes: the frames the server sends and the frames the clients answer, in
envelopes of CBOR (``cbor2``) over a pipe (``Connection.send_bytes``); nothing is pickled.

The loop is the one every driver repeats. The server's frames are dispatched in batches, one per
worker: the parent sends a worker its whole batch, then ``run``; the worker answers each frame in
order and streams the replies back in chunks as it goes, then ``done``. The parent feeds every
reply to the server as it arrives, so the server's memory stays O(d + n k) whatever d: a masked
input is added to the sum and dropped before the next chunk is read. A worker never writes while
the parent writes to it (it takes the whole batch before it starts), so the two cannot block each
other on full pipes. When no frame is left to dispatch, the phase's deadline has passed:
``close_phase()``, exactly as ``InMemoryRouter`` does.

Dropouts follow the same schedule as in process: a frame posted in a phase at or after a
client's stage is not delivered (the parent filters it, and with ``announce_losses`` tells the
server at once). Frames are delivered once, in order: faults, tampering and transcripts are
``InMemoryRouter``'s (``POOL_UNSUPPORTED`` in ``secagg.simulate``).

At the end each worker reports what the report needs: per-client protocol seconds and mask
expansions, the reference sums of the inputs its clients encoded (running sums: O(d) per worker),
its clients' refusals (typed, rebuilt by class name from ``secagg.errors``) and its peak RSS.
"""

from __future__ import annotations

import bisect
import resource
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass

import cbor2
import numpy as np

from secagg import errors
from secagg.errors import ConfigurationError, SecAggError, WorkerFailed
from secagg.transport.memory import SERVER, Metered
from secagg.workers import spawn_worker, stop_workers

CHUNK_BYTES = 1 << 20  # a reply chunk is flushed at this size (or at CHUNK_FRAMES frames)
CHUNK_FRAMES = 512
# A running worker streams a chunk at least every CHUNK_FRAMES clients (seconds of work even at
# d = 10^6); this long without a word from any, the workers are hung.
STALL_SECONDS = 1800.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs to make its clients; plain values only (sent as CBOR)."""

    first: int  # client ids first..last
    last: int
    seed: int | None  # test data (``make_input``)
    dim: int
    value_range: float
    bits: int
    deterministic: str | None  # label of DeterministicRandom, or None: the OS CSPRNG
    limits: tuple[int, int, int, int]  # ClientLimits(max_clients, max_dim, max_degree, max_bits)

    def wire(self) -> bytes:
        return cbor2.dumps(["setup", [self.first, self.last, self.seed, self.dim, self.value_range,
                                      self.bits, self.deterministic, list(self.limits)]])


def worker_blocks(clients: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous id blocks (first, last), as even as possible, one per worker."""
    workers = max(1, min(workers, clients))
    edges = [1 + clients * w // workers for w in range(workers + 1)]
    return [(a, b - 1) for a, b in zip(edges, edges[1:])]


# --- the worker process --------------------------------------------------------------------------

def _worker_main(conn) -> None:
    """Entry point of a worker process: make the clients, then answer batches until ``finish``."""
    try:
        _serve(conn)
    except BaseException:  # report any failure as text; the parent raises WorkerFailed
        try:
            conn.send_bytes(cbor2.dumps(["failed", traceback.format_exc()]))
        except OSError:
            pass
    finally:
        conn.close()


def _serve(conn) -> None:
    from secagg.crypto.randomness import DeterministicRandom, fork, system_random
    from secagg.protocol.client import Client, ClientLimits
    from secagg.quantize import RangeEncoder
    from secagg.sim.scenario import TruthRecorder, make_input

    kind, setup = cbor2.loads(conn.recv_bytes())
    if kind != "setup":
        raise ValueError(f"a worker's first message is its setup, got {kind!r}")
    first, last, seed, dim, value_range, bits, deterministic, limits = setup
    root = system_random if deterministic is None else DeterministicRandom(deterministic)
    recorder = TruthRecorder(dim, bits, dim, keep_each=False)
    limits = ClientLimits(*limits)

    def input_of(c):
        return lambda: make_input(seed, c, dim, value_range)

    clients = {
        c: Client(c, input_of(c), rng=fork(root, "client", c), limits=limits,
                  encoder=recorder.wrap(c, RangeEncoder(fork(root, "client", c, "quantize"))))
        for c in range(first, last + 1)
    }
    seconds = np.zeros(last - first + 1)
    phase_seconds: dict[str, float] = defaultdict(float)
    batch: list = []
    phase = ""
    while True:
        kind, body = cbor2.loads(conn.recv_bytes())
        if kind == "frames":
            phase = body[0]
            batch.extend(body[1])
        elif kind == "run":
            refusals, replies, size = [], [], 0
            for recipient, frame in batch:
                client = clients[recipient]
                t0 = time.perf_counter()
                try:
                    out = client.receive(frame, SERVER)
                except SecAggError as exc:  # the client refused; the server sees it go silent
                    out = []
                    refusals.append([recipient, type(exc).__name__, str(exc),
                                     {"round": exc.round, "state": exc.state, "phase": exc.phase}])
                dt = time.perf_counter() - t0
                seconds[recipient - first] += dt
                phase_seconds[phase] += dt
                for _, reply in out:
                    replies.append([recipient, reply])
                    size += len(reply)
                if size >= CHUNK_BYTES or len(replies) >= CHUNK_FRAMES:
                    conn.send_bytes(cbor2.dumps(["replies", replies]))
                    replies, size = [], 0
            batch = []
            if replies:
                conn.send_bytes(cbor2.dumps(["replies", replies]))
            conn.send_bytes(cbor2.dumps(["done", refusals]))
        elif kind == "finish":
            expansions = np.array([clients[c].mask_expansions for c in range(first, last + 1)], np.int64)
            conn.send_bytes(cbor2.dumps(["stats", {
                "seconds": seconds.astype("<f8").tobytes(),
                "phase_seconds": dict(phase_seconds),
                "expansions": expansions.astype("<i8").tobytes(),
                "ring": recorder.ring.tobytes(),
                "values": recorder.values.astype("<f8").tobytes(),
                "encoded": np.array(sorted(recorder.encoded), dtype="<i8").tobytes(),
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }]))
            return
        else:
            raise ValueError(f"unknown message {kind!r} from the driver")


# --- the parent ----------------------------------------------------------------------------------

class ClientPool:
    """Worker processes holding the clients of one round; a context manager (``close`` ends them)."""

    def __init__(self, specs: list[WorkerSpec]) -> None:
        self.specs = specs
        self._firsts = [s.first for s in specs]
        self._procs, self._conns = [], []
        try:
            for spec in specs:
                proc, parent = spawn_worker(_worker_main, f"secagg-clients-{spec.first}-{spec.last}")
                self._procs.append(proc)
                self._conns.append(parent)
                parent.send_bytes(spec.wire())
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def workers(self) -> int:
        return len(self.specs)

    def worker_of(self, client: int) -> int | None:
        w = bisect.bisect_right(self._firsts, client) - 1
        return w if w >= 0 and client <= self.specs[w].last else None

    def send(self, worker: int, message: list) -> None:
        self._conns[worker].send_bytes(cbor2.dumps(message))

    def receive(self, worker: int) -> tuple[str, object]:
        try:
            data = self._conns[worker].recv_bytes()
        except (EOFError, OSError):
            raise WorkerFailed(f"client worker {worker} ended unexpectedly (exit code "
                               f"{self._procs[worker].exitcode})") from None
        try:
            kind, body = cbor2.loads(data)
        except (ValueError, cbor2.CBORDecodeError) as exc:
            raise WorkerFailed(f"client worker {worker} sent an envelope that does not decode: {exc}") from None
        if kind == "failed":
            raise WorkerFailed(f"client worker {worker} failed:\n{body}")
        return kind, body

    def ready(self, workers) -> list[int]:
        """The workers among ``workers`` with a message (or an end) to read. A worker that dies is
        ready (its pipe ends); one silent for ``STALL_SECONDS`` is taken for hung."""
        from multiprocessing.connection import wait

        index = {id(self._conns[w]): w for w in workers}
        ready = wait([self._conns[w] for w in workers], timeout=STALL_SECONDS)
        if not ready:
            raise WorkerFailed(f"client workers {sorted(workers)} sent nothing for {STALL_SECONDS} s")
        return [index[id(c)] for c in ready]

    def close(self) -> None:
        stop_workers(self._procs, self._conns)
        self._conns, self._procs = [], []


def _error(client: int, name: str, message: str, where: dict) -> SecAggError:
    """A client's refusal, rebuilt from its class name (only classes of ``secagg.errors``) and
    its attributes."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SecAggError)) or cls is errors.EnrolmentRefused:
        cls = SecAggError
    return cls(message, client=client, round=where.get("round"), state=where.get("state"),
               phase=where.get("phase"))


class PoolRouter(Metered):
    """Run one round with the clients on ``pool``: ``run()`` returns when the server has a result
    or has aborted. Measures what ``InMemoryRouter`` measures (seconds, bytes, refusals, counts);
    ``recorder`` (a ``TruthRecorder``) takes the reference sums of the inputs the workers' clients
    encoded."""

    def __init__(self, server, pool: ClientPool, recorder, *, schedule=None,
                 announce_losses: bool = False, progress=None) -> None:
        super().__init__(server, schedule)
        self.pool = pool
        self.recorder = recorder
        self.announce_losses = announce_losses
        self.progress = progress
        self._outbox: list[tuple[int, bytes, object]] = []  # (recipient, frame, phase when posted)
        self._lost: set[int] = set()
        self.mask_expansions: dict[int, int] = {}
        self.worker_peak_rss: list[int] = []

    def run(self) -> None:
        server = self.server
        self._post(self._timed(SERVER, server.start))
        while not server.finished:
            if self._outbox:
                self._dispatch()
            else:
                self._post(self._timed(SERVER, server.close_phase))
        while self._outbox:  # the server's last words (Abort notices)
            self._dispatch()
        self._collect()

    # --- helpers ------------------------------------------------------------------------------

    def _post(self, outgoing) -> None:
        phase = self.server.phase
        for recipient, frame in outgoing:
            self.counts["frames"] += 1
            self._outbox.append((recipient, frame, phase))

    def _dispatch(self) -> None:
        """Deliver the outbox: each worker gets its batch, answers it, and the server takes every
        reply as it streams in (its own answers wait in the outbox for the next dispatch)."""
        outbox, self._outbox = self._outbox, []
        batches: dict[int, list] = defaultdict(list)
        for recipient, frame, phase in outbox:
            self.bytes_sent[SERVER] += len(frame)
            worker = self.pool.worker_of(recipient)
            if worker is None or self._silent(recipient, phase):
                self.counts["undelivered"] += 1
                if worker is not None and self.announce_losses and recipient not in self._lost:
                    self._lost.add(recipient)
                    self._post(self._timed(SERVER, self.server.peer_lost, recipient))
                continue
            self.bytes_received[recipient] += len(frame)
            batches[worker].append([recipient, frame])
        del outbox
        phase = self.server.phase.value
        for worker, frames in batches.items():
            for i in range(0, len(frames), CHUNK_FRAMES):
                self.pool.send(worker, ["frames", [phase, frames[i:i + CHUNK_FRAMES]]])
            self.pool.send(worker, ["run", None])
        if self.progress is not None:
            self.progress.update(sum(len(f) for f in batches.values()))
        running = set(batches)
        batches.clear()
        while running:
            for worker in self.pool.ready(running):
                kind, body = self.pool.receive(worker)
                if kind == "replies":
                    for sender, frame in body:
                        self.counts["frames"] += 1
                        self.bytes_sent[sender] += len(frame)
                        self.bytes_received[SERVER] += len(frame)
                        self._post(self._timed(SERVER, self.server.receive, frame, sender))
                    if self.progress is not None:
                        self.progress.update(len(body))
                elif kind == "done":
                    for client, name, message, where in body:
                        self.refusals.setdefault(client, _error(client, name, message, where))
                    running.discard(worker)
                else:
                    raise WorkerFailed(f"client worker {worker} sent {kind!r} during a batch")

    def _collect(self) -> None:
        for worker, spec in enumerate(self.pool.specs):
            self.pool.send(worker, ["finish", None])
            kind, stats = self.pool.receive(worker)
            if kind != "stats":
                raise WorkerFailed(f"client worker {worker} sent {kind!r} instead of its stats")
            ids = range(spec.first, spec.last + 1)
            for c, s in zip(ids, np.frombuffer(stats["seconds"], dtype="<f8")):
                if s:
                    self.seconds[c] += float(s)
            for c, e in zip(ids, np.frombuffer(stats["expansions"], dtype="<i8")):
                self.mask_expansions[c] = int(e)
            for phase, s in stats["phase_seconds"].items():
                self.phase_seconds.setdefault(phase, {"server": 0.0, "clients": 0.0})["clients"] += s
            self.recorder.add_sums(np.frombuffer(stats["encoded"], dtype="<i8").tolist(),
                                   np.frombuffer(stats["ring"], dtype=self.recorder.ring.dtype),
                                   np.frombuffer(stats["values"], dtype="<f8"))
            self.worker_peak_rss.append(int(stats["peak_rss"]))


def check_workers(client_workers) -> None:
    if isinstance(client_workers, bool) or not isinstance(client_workers, int) or client_workers < 0:
        raise ConfigurationError(f"client_workers must be a non-negative integer (0: clients in "
                                 f"process), got {client_workers!r}")
