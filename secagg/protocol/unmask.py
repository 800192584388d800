"""Sharded unmasking: the server's last phase split by coordinate range over cores or machines.

Theory of operation. Removing the masks is sum(sign * PRG(seed)) over every mask, added to the
accumulated sum. Both AES-CTR (which starts at any 16-byte block: ``prg.expand_range_into``) and
the addition split by coordinate range, so shard i of the result needs shard i of the sum and
every mask's shard i, nothing else. An unmasker gets the accumulated sum and the list of
(seed, sign) masks and returns with the masks removed, in place.

- ``SerialUnmasker``: one thread (what the server did before).
- ``ThreadUnmasker(workers)``: shards on threads over the one array. pyca/cryptography's
  ``update_into`` and NumPy's add both release the GIL, so threads run on every core with no copy
  of anything and nothing serialised. The default (all cores).
- ``ProcessUnmasker(workers)``: shards on spawned worker processes; the sum lives in shared memory
  (``multiprocessing.shared_memory``), each worker maps it and touches only its shard. Workers get
  a segment name, a shard range and the masks as one bytes blob (seed || sign byte each), all made
  by the server itself, in CBOR over a pipe (never pickled).
- ``RayUnmasker(address)``: the same shard function as Ray tasks (``secagg[ray]``), for more
  than one machine: each task gets its shard of the sum (Ray's object store) and the masks blob,
  and returns the unmasked shard.

Below ``MIN_PARALLEL_WORK`` mask-words (d times the number of masks) every unmasker runs serially:
a pool costs more than it saves there.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cbor2
import numpy as np

from secagg.crypto import prg
from secagg.errors import ConfigurationError, WorkerFailed
from secagg.protocol.masking import apply_masks
from secagg.workers import spawn_worker, stop_workers

MIN_PARALLEL_WORK = 1 << 22  # mask-words: below this, one thread
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
    requests and replies cross their pipes as CBOR (``Connection.send_bytes``): nothing is pickled."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = _workers(workers)
        self._procs: list = []
        self._conns: list = []

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (empty until they start)."""
        return [proc.pid for proc in self._procs]

    def warm(self) -> None:
        """Start the workers and wait until each has imported what a shard needs, so that the
        first round does not pay for it (a server that runs many rounds starts them once)."""
        if self.workers > 1:
            self._start()
            for w in range(len(self._conns)):
                self._send(w, ["ready", None])
            for w in range(len(self._conns)):
                self._receive(w)

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
        raise WorkerFailed(f"unmasking worker {w} ended unexpectedly (exit code {code}); a program "
                           "that uses the process pool must start it under `if __name__ == "
                           "'__main__':`, since each worker imports the main module afresh") from None

    def __call__(self, target: np.ndarray, masks, bits: int) -> int:
        from multiprocessing import shared_memory

        masks = list(masks)
        if self.workers == 1 or target.size * len(masks) < MIN_PARALLEL_WORK:
            return apply_range(target, 0, masks, bits)
        self._start()
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
        return len(masks)

    def close(self) -> None:
        stop_workers(self._procs, self._conns)
        self._procs, self._conns = [], []


def _worker_main(conn) -> None:
    """An unmasking worker: answers ["ready", None] and ["shard", args] with ["ok", ...] or
    ["failed", traceback] until its pipe ends."""
    import traceback

    while True:
        try:
            kind, body = cbor2.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if kind == "ready":
                reply = ["ok", os.getpid()]
            elif kind == "shard":
                reply = ["ok", _process_shard(*body)]
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception:
            reply = ["failed", traceback.format_exc()]
        conn.send_bytes(cbor2.dumps(reply))


def _process_shard(name: str, dtype: str, size: int, start: int, stop: int, blob: bytes, bits: int) -> int:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
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
    cluster's CPU count."""

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

    def warm(self) -> None:
        """Start one worker per shard and import what a shard needs there."""
        self._ray.get([self._ray.remote(os.getpid).remote() for _ in range(self.workers)])

    def __call__(self, target: np.ndarray, masks, bits: int) -> int:
        masks = list(masks)
        blob = self._ray.put(pack_masks(masks))
        bounds = shard_bounds(target.size, target.dtype, self.workers)
        futures = [self._task.remote(target[a:b], a, blob, bits) for a, b in bounds]
        for (a, b), shard in zip(bounds, self._ray.get(futures)):
            target[a:b] = shard
        return len(masks)


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


def make_unmasker(workers: int | None = None, *, kind: str = "thread", ray_address: str | None = None,
                  **ray_init):
    """The unmasker for ``workers`` (default every core): ``kind`` thread (default), process, or
    ray (at ``ray_address``; ``ray_init`` goes to ``ray.init`` when Ray is not yet running)."""
    if ray_address is not None or kind == "ray":
        return RayUnmasker(ray_address, shards=workers, **ray_init)
    if kind == "process":
        return ProcessUnmasker(workers)
    if kind != "thread":
        raise ConfigurationError(f"unmasker kind must be thread, process or ray, got {kind!r}")
    return ThreadUnmasker(workers)
