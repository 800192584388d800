"""Sharded unmasking: the server's last phase split by coordinate range over cores or machines.

Theory of operation. Removing the masks is sum(sign * PRG(seed)) over every mask, added to the
accumulated sum. Both AES-CTR (which starts at any 16-byte block: ``prg.expand_range_into``) and
the addition split by coordinate range, so shard i of the result needs shard i of the sum and
every mask's shard i, nothing else. An unmasker gets the accumulated sum and the masks (a
``Masks``, or any iterable of (seed, sign)) and returns with the masks removed, in place.

The masks come as ``Masks``: the survivors' self-mask seeds, ready, and each dropped client's
recovered mask key with the surviving neighbours whose pairwise masks with it are in the sum. Those
seeds are derived (X25519 and HKDF per pair, ``derive``) on the way; iterating a ``Masks``
derives them serially. Below d = 10^5 the derivation costs more than the expansion (at n = 1,000,
10% dropout: about 3,200 pairs, 70-110 us each), so the process pool splits it too.

- ``SerialUnmasker``: one thread.
- ``ThreadUnmasker(workers)``: shards on threads over the one array. pyca/cryptography's
  ``update_into`` and NumPy's add both release the GIL, so threads run on every core with no copy
  of anything and nothing serialised; X25519 does not release it, so the derivation stays serial.
- ``ProcessUnmasker(workers)``: the default (``default_unmasker()``: one pool per process, every
  core, started by the first round that needs it). Up to ``SPLIT_BY_MASKS_BYTES`` of sum it
  splits the masks: each worker derives and expands its part into a sum of its own and returns
  it, and the server adds the parts (setting up an AES key costs about as much as expanding 10^4
  words, so coordinate shards, which set up every mask in every worker, gain little there).
  Above, it first derives the dropped pairs' seeds on the workers, split by pair count, then
  expands in coordinate shards: the sum lives in shared memory (``multiprocessing.shared_memory``),
  each worker maps it and touches only its shard, so no worker holds more than its shard of the
  sum. Workers (``secagg.workers``: fresh interpreters that never import the program's main
  module) get segment names, ranges, keys and masks as bytes (seed || sign byte each), all made
  by the server itself, in CBOR over a pipe (never pickled). The dropped clients' recovered
  private keys cross that pipe to the server's own children, never further.
- ``RayUnmasker(address)``: the same shard function as Ray tasks (``secagg[ray]``), for more
  than one machine: each task gets its shard of the sum (Ray's object store) and the masks blob,
  and returns the unmasked shard.

Below ``MIN_PARALLEL_WORK`` mask-words (d times the number of masks) every unmasker expands
serially, and the pool then works in the server unless there are ``MIN_PARALLEL_PAIRS`` dropped
pairs to derive: a pool costs more than it saves there.
"""

from __future__ import annotations

import atexit
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cbor2
import numpy as np

from secagg.crypto import kex, prg
from secagg.errors import ConfigurationError, WorkerFailed
from secagg.protocol import keys
from secagg.protocol.masking import apply_masks
from secagg.workers import attach_shared_memory, exchange_lock, spawn_worker, stop_workers

MIN_PARALLEL_WORK = 1 << 22  # mask-words: below this, one thread
MIN_PARALLEL_PAIRS = 128  # dropped pairs: below this the pool derives their seeds in the server
# Up to this size of the sum the pool splits the masks, not the coordinates: each worker derives
# and expands a part of the masks into a sum of its own (at most this big) and returns it. Setting
# up one AES key costs as much as expanding about 10^4 words, so coordinate shards, which set up
# every mask in every worker, gain little there. The three thresholds were checked with
# ``python3 -m bench.unmask --sweep`` (bench/results/unmask_sweep.md): on 2 cores the pool gained
# over serial from about 4 M mask-words (30 to 1,000 masks) and from 128 dropped pairs; up to
# 1 MiB split masks beat or tied shards, and what the thresholds pick came within noise of the
# fastest forced choice.
SPLIT_BY_MASKS_BYTES = 1 << 20
SIGN_BYTE = {1: b"\x01", -1: b"\x00"}


def shard_bounds(dim: int, dtype, shards: int) -> list[tuple[int, int]]:
    """``shards`` ranges covering 0..dim, each starting on a 16-byte block (all but the last a
    multiple of the block's words), as even as that allows; empty ranges dropped."""
    per_block = prg.BLOCK_BYTES // np.dtype(dtype).itemsize
    blocks = -(-dim // per_block)
    shards = max(1, min(shards, blocks))
    edges = [min(dim, (blocks * i // shards) * per_block) for i in range(shards + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def apply_range(shard: np.ndarray, start: int, masks, bits: int) -> int:
    """``shard`` (words start .. start + len(shard) of the sum) += sum(sign * PRG(seed)[range])."""
    return apply_masks(shard, masks, bits, start)


def pack_masks(masks) -> bytes:
    return b"".join(seed + SIGN_BYTE[1 if sign > 0 else -1] for seed, sign in masks)


def unpack_masks(blob: bytes) -> list[tuple[bytes, int]]:
    step = prg.SEED_BYTES + 1
    if len(blob) % step:
        raise ValueError("a masks blob is a whole number of (seed, sign) records")
    return [(blob[i:i + prg.SEED_BYTES], 1 if blob[i + prg.SEED_BYTES] else -1) for i in range(0, len(blob), step)]


@dataclass(frozen=True)
class DroppedKey:
    """A dropped client's recovered mask private key, its advertised (c, s) keys, and the
    surviving neighbours ``(v, c_v, s_v)`` whose pairwise masks with it are in the sum."""

    owner: int
    private_key: bytes
    keys: tuple[bytes, bytes]
    peers: tuple[tuple[int, bytes, bytes], ...]

    def wire(self) -> list:
        return [self.owner, self.private_key, list(self.keys), [list(p) for p in self.peers]]

    @classmethod
    def from_wire(cls, item: list) -> DroppedKey:
        owner, private_key, (c, s), peers = item
        return cls(owner, private_key, (c, s), tuple((v, cv, sv) for v, cv, sv in peers))


class Masks:
    """The masks a round's unmasking removes: ``ready`` (seed, sign) pairs (the survivors' self
    masks) and ``dropped`` keys whose pairwise seeds are derived on the way. Iterating yields every
    (seed, sign), deriving serially; ``len`` is the number of masks."""

    def __init__(self, session: bytes, ready=(), dropped: tuple[DroppedKey, ...] = ()) -> None:
        self.session = session
        self.ready = list(ready)
        self.dropped = tuple(dropped)

    @property
    def pairs(self) -> int:
        return sum(len(d.peers) for d in self.dropped)

    def __len__(self) -> int:
        return len(self.ready) + self.pairs

    def __iter__(self):
        yield from self.ready
        for dropped in self.dropped:
            yield from derive(self.session, dropped)

    def dropped_parts(self, parts: int) -> list[list]:
        """The dropped keys in at most ``parts`` groups of about equal pair counts, each group as
        ``DroppedKey.wire()`` items: what one worker or Ray task derives (``derive_packed``)."""
        return [[d.wire() for d in group] for group in split_dropped(self.dropped, parts)]

    def with_derived(self, blobs) -> list[tuple[bytes, int]]:
        """Every (seed, sign): ``ready``, then the masks ``derive_packed`` returned for each of
        ``dropped_parts``, in order."""
        return self.ready + [m for blob in blobs for m in unpack_masks(blob)]


def derive(session: bytes, dropped: DroppedKey):
    """The (seed, sign) of each pairwise mask of ``dropped.owner`` still in the sum: the seed of
    u and v from u's recovered key and v's advert (SPEC, "Key schedule"), with the sign that undoes
    what v added."""
    u = dropped.owner
    key = kex.load_private(dropped.private_key)
    for v, c_v, s_v in dropped.peers:
        pair = keys.pair_session(session, u, dropped.keys, v, (c_v, s_v))
        yield keys.pairwise_mask_seed(key, s_v, session=pair, a=u, b=v), -keys.mask_sign(v, u)


def derive_packed(session: bytes, dropped_wire: list) -> bytes:
    """``derive`` for each ``DroppedKey.wire()`` in ``dropped_wire``, packed (``pack_masks``): what
    a pool worker or a Ray task returns."""
    return pack_masks(m for item in dropped_wire for m in derive(session, DroppedKey.from_wire(item)))


def split_dropped(dropped, parts: int) -> list[list[DroppedKey]]:
    """``dropped`` in at most ``parts`` groups of about equal pair counts (a client's pairs may
    split between groups), in order."""
    total = sum(len(d.peers) for d in dropped)
    groups: list[list[DroppedKey]] = [[] for _ in range(parts)]
    done = 0
    for d in dropped:
        peers = list(d.peers)
        while peers:
            g = min(parts - 1, done * parts // max(total, 1))
            room = max(1, -(-(g + 1) * total // parts) - done)
            take, peers = peers[:room], peers[room:]
            groups[g].append(DroppedKey(d.owner, d.private_key, d.keys, tuple(take)))
            done += len(take)
    return [g for g in groups if g]


class SerialUnmasker:
    workers = 1

    def warm(self) -> None:
        """Start what the first round would otherwise start (nothing here)."""

    def __call__(self, target: np.ndarray, masks, bits: int) -> int:
        return apply_range(target, 0, list(masks), bits)


class ThreadUnmasker:
    """Shards on ``workers`` threads (default: every core)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = _workers(workers)

    def warm(self) -> None:
        """Nothing to start: a round makes its threads."""

    def __call__(self, target: np.ndarray, masks, bits: int) -> int:
        masks = list(masks)
        if self.workers == 1 or target.size * len(masks) < MIN_PARALLEL_WORK:
            return apply_range(target, 0, masks, bits)
        bounds = shard_bounds(target.size, target.dtype, self.workers)
        with ThreadPoolExecutor(len(bounds)) as pool:
            list(pool.map(lambda ab: apply_range(target[ab[0]:ab[1]], ab[0], masks, bits), bounds))
        return len(masks)


class ProcessUnmasker:
    """Shards on ``workers`` processes over shared memory (default: every core). The workers are
    spawned once (``warm()``, or the first round that needs them) and serve every later round;
    requests and replies cross their pipes as CBOR (``Connection.send_bytes``): nothing is pickled.
    One call at a time: callers in several threads take turns (a lock held across each exchange)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = _workers(workers)
        self._procs: list = []
        self._conns: list = []
        self._lock = exchange_lock()

    def __deepcopy__(self, memo) -> ProcessUnmasker:
        """A pool is a shared resource, not state: a copied server (a snapshot) uses the same one."""
        return self

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (empty until they start)."""
        return [proc.pid for proc in self._procs]

    def warm(self) -> None:
        """Start the workers and wait until each has imported what a shard needs, so that the
        first round does not pay for it (a server that runs many rounds starts them once)."""
        if self.workers > 1:
            with self._lock:
                self._warm()

    def _warm(self) -> None:
        """Each worker maps a small segment once: what its first shard would start (before Python
        3.13, its own resource tracker process) starts here, not in a round."""
        from multiprocessing import shared_memory

        self._start()
        shm = shared_memory.SharedMemory(create=True, size=16)
        try:
            for w in range(len(self._conns)):
                self._send(w, ["ready", shm.name])
            for w in range(len(self._conns)):
                self._receive(w)
        finally:
            shm.close()
            shm.unlink()

    def start(self, work: int | None = None) -> None:
        """Spawn the workers without waiting for them: they import while the round runs, so the
        round that needs them does not wait for a cold start (``Server.start`` calls it with the
        round's clients times its dimension, ``work``; a round below ``MIN_PARALLEL_WORK`` starts
        nothing; ``warm`` also waits until each is ready)."""
        if self.workers > 1 and (work is None or work >= MIN_PARALLEL_WORK):
            with self._lock:
                self._start()

    def _start(self) -> None:
        if self._procs:
            return
        try:
            for i in range(self.workers):
                proc, conn = spawn_worker(_worker_main, f"secagg-unmask-{i}")
                self._procs.append(proc)
                self._conns.append(conn)
        except BaseException:
            self.close()
            raise

    def _send(self, w: int, message: list) -> None:
        try:
            self._conns[w].send_bytes(cbor2.dumps(message))
        except OSError:
            self._lost(w)

    def _receive(self, w: int):
        try:
            kind, body = cbor2.loads(self._conns[w].recv_bytes())
        except (EOFError, OSError):
            self._lost(w)
        if kind != "ok":
            self.close()  # the other workers' replies are not read: start afresh next time
            raise WorkerFailed(f"unmasking worker {w} failed:\n{body}")
        return body

    def _lost(self, w: int):
        proc = self._procs[w]
        proc.join(timeout=1)
        code = proc.exitcode
        self.close()
        raise WorkerFailed(f"unmasking worker {w} ended unexpectedly (exit code {code})") from None

    def __call__(self, target: np.ndarray, masks, bits: int) -> int:
        if not isinstance(masks, Masks):
            masks = Masks(b"", ready=masks)
        count = len(masks)
        if self.workers == 1 or (target.size * count < MIN_PARALLEL_WORK and masks.pairs < MIN_PARALLEL_PAIRS):
            return apply_range(target, 0, masks, bits)
        with self._lock:
            self._start()
            if target.nbytes <= SPLIT_BY_MASKS_BYTES:
                self._by_masks(target, masks, bits)
            else:
                self._by_shards(target, self._derive(masks), bits)
        return count

    def _by_masks(self, target: np.ndarray, masks: Masks, bits: int) -> None:
        """Each worker derives and expands its part of the masks into a sum of its own, which it
        returns; the server adds the parts. One round trip, each mask set up once."""
        parts = len(self._conns)
        ready = [masks.ready[len(masks.ready) * w // parts: len(masks.ready) * (w + 1) // parts] for w in range(parts)]
        dropped = masks.dropped_parts(parts)
        dropped += [[]] * (parts - len(dropped))
        for w in range(parts):
            self._send(w, ["partial", [masks.session, target.dtype.str, target.size, pack_masks(ready[w]),
                                       dropped[w], bits]])
        partials = [self._receive(w) for w in range(parts)]  # all of them before touching the sum
        for partial in partials:
            np.add(target, np.frombuffer(partial, dtype=target.dtype), out=target)
        if bits not in (32, 64):
            np.bitwise_and(target, target.dtype.type((1 << bits) - 1), out=target)

    def _derive(self, masks: Masks) -> list[tuple[bytes, int]]:
        """Every (seed, sign) of ``masks``, the dropped pairs' seeds derived on the workers."""
        if masks.pairs < MIN_PARALLEL_PAIRS:
            return list(masks)
        groups = masks.dropped_parts(len(self._conns))
        for w, group in enumerate(groups):
            self._send(w, ["derive", [masks.session, group]])
        return masks.with_derived([self._receive(w) for w in range(len(groups))])

    def _by_shards(self, target: np.ndarray, masks: list, bits: int) -> None:
        """Each worker expands every mask over its coordinate shard of the sum, in shared memory."""
        from multiprocessing import shared_memory

        shm = shared_memory.SharedMemory(create=True, size=target.nbytes)
        try:
            shared = np.ndarray(target.shape, dtype=target.dtype, buffer=shm.buf)
            shared[:] = target
            blob = pack_masks(masks)
            bounds = shard_bounds(target.size, target.dtype, self.workers)
            for w, (a, b) in enumerate(bounds):
                self._send(w, ["shard", [shm.name, target.dtype.str, target.size, a, b, blob, bits]])
            for w in range(len(bounds)):
                self._receive(w)
            target[:] = shared
            del shared
        finally:
            shm.close()
            shm.unlink()

    def close(self) -> None:
        with self._lock:
            stop_workers(self._procs, self._conns)
            self._procs, self._conns = [], []


def _worker_main(conn) -> None:
    """An unmasking worker: answers ["ready", segment name] (it maps the segment once),
    ["partial", args] (its part of the masks, expanded into a sum of its own), ["derive",
    [session, dropped keys]] (the packed (seed, sign) masks) and ["shard", args] with ["ok", ...]
    or ["failed", traceback] until its pipe ends."""
    import traceback

    while True:
        try:
            kind, body = cbor2.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if kind == "ready":
                attach_shared_memory(body).close()
                reply = ["ok", os.getpid()]
            elif kind == "partial":
                session, dtype, size, ready, dropped, bits = body
                partial = np.zeros(size, dtype=np.dtype(dtype))
                apply_range(partial, 0, Masks(session, unpack_masks(ready), tuple(map(DroppedKey.from_wire, dropped))), bits)
                reply = ["ok", partial.tobytes()]
            elif kind == "derive":
                reply = ["ok", derive_packed(*body)]
            elif kind == "shard":
                reply = ["ok", _process_shard(*body)]
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception:
            reply = ["failed", traceback.format_exc()]
        conn.send_bytes(cbor2.dumps(reply))


def _process_shard(name: str, dtype: str, size: int, start: int, stop: int, blob: bytes, bits: int) -> int:
    shm = attach_shared_memory(name)
    try:
        whole = np.ndarray((size,), dtype=np.dtype(dtype), buffer=shm.buf)
        count = apply_range(whole[start:stop], start, unpack_masks(blob), bits)
        del whole
        return count
    finally:
        shm.close()


class RayUnmasker:
    """Shards as Ray tasks on the cluster at ``address`` (``None``: a local Ray instance;
    ``ray.init`` is called once if Ray is not yet initialised). ``shards`` defaults to the
    cluster's CPU count. With ``MIN_PARALLEL_PAIRS`` dropped pairs or more, their seeds are
    derived first, as one Ray task per shard."""

    def __init__(self, address: str | None = None, shards: int | None = None, **init_kwargs) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigurationError("the Ray unmasker needs Ray: pip install 'secagg[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=address, **init_kwargs)
        self._ray = ray
        self.workers = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(_ray_shard)
        self._derive_task = ray.remote(derive_packed)

    def warm(self) -> None:
        """Start one worker per shard and import what a shard needs there."""
        pid = self._ray.remote(_pid)
        self._ray.get([pid.remote() for _ in range(self.workers)])

    def __call__(self, target: np.ndarray, masks, bits: int) -> int:
        if isinstance(masks, Masks) and masks.pairs >= MIN_PARALLEL_PAIRS:
            groups = masks.dropped_parts(self.workers)
            masks = masks.with_derived(self._ray.get([self._derive_task.remote(masks.session, g) for g in groups]))
        else:
            masks = list(masks)
        blob = self._ray.put(pack_masks(masks))
        bounds = shard_bounds(target.size, target.dtype, self.workers)
        futures = [self._task.remote(target[a:b], a, blob, bits) for a, b in bounds]
        for (a, b), shard in zip(bounds, self._ray.get(futures)):
            target[a:b] = shard
        return len(masks)


def _pid() -> int:
    return os.getpid()


def _ray_shard(shard: np.ndarray, start: int, blob: bytes, bits: int) -> np.ndarray:
    shard = np.array(shard)  # Ray hands a read-only view of its object store
    apply_range(shard, start, unpack_masks(blob), bits)
    return shard


def _workers(workers: int | None) -> int:
    if workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    return workers


def make_unmasker(workers: int | None = None, *, kind: str = "process", ray_address: str | None = None,
                  **ray_init):
    """The unmasker for ``workers`` (default every core): ``kind`` process (default), thread, or
    ray (at ``ray_address``; ``ray_init`` goes to ``ray.init`` when Ray is not yet running). A
    process pool belongs to its caller, who ``close``s it (or leaves it to the process's end)."""
    if ray_address is not None or kind == "ray":
        return RayUnmasker(ray_address, shards=workers, **ray_init)
    if kind == "process":
        return ProcessUnmasker(workers)
    if kind != "thread":
        raise ConfigurationError(f"unmasker kind must be process, thread or ray, got {kind!r}")
    return ThreadUnmasker(workers)


_default: ProcessUnmasker | None = None
_default_lock = exchange_lock()


def default_unmasker() -> ProcessUnmasker:
    """The process's shared pool on every core: what a server uses when given no unmasker. Its
    workers start with the first round big enough to need them and serve every later round of
    every server in this process; they end with the process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ProcessUnmasker()
            atexit.register(_default.close)
        return _default
