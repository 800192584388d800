"""secagg benchmarks (see bench/README.md)."""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown"."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def median_seconds(fn, runs: int) -> float:
    """Median wall time of ``runs`` calls of ``fn``."""
    import statistics
    import time

    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
