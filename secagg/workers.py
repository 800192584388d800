"""Worker processes shared by the simulator's client pool and the server's unmasking pool:
spawned (a fresh interpreter: nothing of this process is inherited), each with one duplex pipe
that carries bytes only (the callers send CBOR; nothing is pickled)."""

from __future__ import annotations


def spawn_worker(target, name: str):
    """Start ``target(conn)`` in a spawned daemon process; returns (process, this end of the pipe)."""
    from multiprocessing import get_context

    ctx = get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=target, args=(child,), daemon=True, name=name)
    proc.start()
    child.close()
    return proc, parent


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
