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


def write_results(out, name: str, rows: list, lines: list[str]) -> None:
    """``out``/``name``.json (the CPU and the rows) and ``name``.md (``lines``), then print the
    markdown."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
