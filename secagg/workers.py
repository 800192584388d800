"""Worker processes shared by the simulator's client pool and the server's unmasking pool.

Each worker is a fresh interpreter started as ``python -c <_child_main> <module>:<function> <fd>``:
nothing of this process is inherited, and, unlike multiprocessing's spawn, the program's main
module is never imported again, so a script that uses a pool needs no ``if __name__ ==
"__main__":`` guard. The worker calls ``<function>(conn)`` with one duplex pipe
(``multiprocessing.connection.Connection`` over a socket pair) that carries bytes only: the callers
send CBOR, nothing is pickled. The child's ``sys.path`` is the parent's, so it imports the same
secagg the parent runs. When the parent ends, the pipe ends and the worker returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading


class Worker:
    """A started worker process: ``pid``, ``exitcode`` (None while it runs), ``join``,
    ``is_alive``, ``terminate`` and ``kill``."""

    def __init__(self, popen: subprocess.Popen, name: str) -> None:
        self._popen = popen
        self.name = name

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def terminate(self) -> None:
        if self._popen.poll() is None:
            self._popen.terminate()

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()


def exchange_lock() -> threading.RLock:
    """A lock for one pool's pipes, held across a request and its replies: a pool shared by
    servers in several threads (the default unmasking pool) must never hand one caller's reply to
    another. (Threads live here, in the layer that runs processes, not in the sans-IO core.)"""
    return threading.RLock()


def spawn_worker(target, name: str):
    """Start ``target(conn)`` (a module-level function) in a new interpreter; returns
    (``Worker``, this end of the pipe)."""
    from multiprocessing import Pipe

    qualified = f"{target.__module__}:{target.__qualname__}"
    if target.__module__ == "__main__" or "." in target.__qualname__:
        raise ValueError(f"a worker runs a module-level function of an importable module, not {qualified}")
    parent, child = Pipe(duplex=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-c", _CHILD, qualified, str(child.fileno()), name],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True,
        )
    finally:
        child.close()
    return Worker(popen, name), parent


def stop_workers(procs, conns) -> None:
    """Close the pipes (a worker reads their end and returns), then wait for each process for up
    to 5 s, and terminate one that is still running."""
    for conn in conns:
        conn.close()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join()


def attach_shared_memory(name: str):
    """Map the parent's shared-memory segment ``name`` without adopting it: before Python 3.13
    attaching registers the segment with this process's resource tracker, which would unlink it
    when this worker ends (the parent owns and unlinks it)."""
    from multiprocessing import resource_tracker, shared_memory

    try:
        return shared_memory.SharedMemory(name=name, track=False)
    except TypeError:  # Python < 3.13
        shm = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(shm._name, "shared_memory")
        return shm


_CHILD = "import sys; from secagg.workers import _child_main; _child_main(sys.argv[1:])"


def _child_main(argv: list[str]) -> None:
    import importlib
    from multiprocessing.connection import Connection

    qualified, fd, _name = argv
    module, function = qualified.split(":")
    target = getattr(importlib.import_module(module), function)
    conn = Connection(int(fd))
    try:
        target(conn)
    finally:
        conn.close()
