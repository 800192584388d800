"""Render benchmark results: a text table, a markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path

COLUMNS = [
    ("n", lambda r: f"{r['clients']:,}"),
    ("d", lambda r: f"{r['dim']:,}"),
    ("drop", lambda r: f"{r['dropout']:.1f}"),
    ("client s", lambda r: f"{r['client_seconds_median']:.4f}"),
    ("limit", lambda r: f"{r['client_limit_seconds']:.4f}"),
    ("x lim", lambda r: f"{r['client_ratio_to_limit']:.1f}"),
    ("server s", lambda r: f"{r['server_seconds']:.3f}"),
    ("limit", lambda r: f"{r['server_limit_seconds']:.3f}"),
    ("x lim", lambda r: f"{r['server_ratio_to_limit']:.1f}"),
    ("RSS MB", lambda r: f"{r['peak_rss_bytes'] / 2**20:.0f}"),
    ("B/client", lambda r: f"{r['bytes_sent_per_client']:,}"),
    ("exact", lambda r: "yes" if r["exact"] else "NO"),
    ("Flower client s", lambda r: f"{r['peer_client_seconds_median']:.4f}" if "peer_client_seconds_median" in r else "-"),
    ("Flower server s", lambda r: f"{r['peer_server_seconds']:.3f}" if "peer_server_seconds" in r else "-"),
    ("client speedup", lambda r: f"{r['client_speedup_vs_peer']:.1f}x" if "client_speedup_vs_peer" in r else "-"),
    ("server speedup", lambda r: f"{r['server_speedup_vs_peer']:.1f}x" if "server_speedup_vs_peer" in r else "-"),
]


def _rows(results: dict) -> tuple[list[str], list[list[str]]]:
    show_peer = any("peer_client_seconds_median" in r for r in results["scenarios"])
    cols = [c for c in COLUMNS if show_peer or not c[0].startswith(("Flower", "client speedup", "server speedup"))]
    return [c[0] for c in cols], [[f(r) for _, f in cols] for r in results["scenarios"]]


def _target_lines(results: dict) -> list[str]:
    t = results.get("targets") or {}
    lines = []
    if "client_masking" in t:
        m = t["client_masking"]
        lines.append(f"client masking, d = 1,000,000, {m['masks']} masks (degree {m['degree']} at n = 1000): "
                     f"{m['masking_seconds']:.4f} s vs limit {m['limit_seconds']:.4f} s = "
                     f"{m['ratio_to_limit']:.2f}x (target <= 2x)")
    if "shamir_1000_seeds" in t:
        s = t["shamir_1000_seeds"]
        lines.append(f"Shamir: reconstruct {s['secrets']} self-mask seeds at t = {s['threshold']}: "
                     f"{s['reconstruct_seconds']:.4f} s (target < 0.1 s)")
    if "scale" in t:
        s = t["scale"]
        lines.append(f"scale, d = 1,000, 10% dropout: server {s['n1000_server_ms_per_client']:.3f} ms/client at "
                     f"n = 1,000 vs {s['n10000_server_ms_per_client']:.3f} ms/client at n = 10,000 "
                     f"(n = 10,000 exact: {s['n10000_exact']}, peak RSS {s['n10000_peak_rss_bytes'] / 2**20:.0f} MB)")
    for r in results["scenarios"]:
        if "peer_skipped" in r:
            line = f"peer skipped at n = {r['clients']:,}, d = {r['dim']:,}, dropout {r['dropout']}: {r['peer_skipped']}"
            if line not in lines:
                lines.append(line)
    return lines


def _limits_lines(results: dict) -> list[str]:
    return [f"d = {x['dim']:,}: AES-256-CTR {x['aes_ctr_bytes_per_second'] / 1e9:.2f} GB/s, "
            f"uint32 add {x['add_bytes_per_second'] / 1e9:.2f} GB/s" for x in results["limits"]]


def table(results: dict) -> str:
    head, rows = _rows(results)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out += [""] + ["machine limits: " + "; ".join(_limits_lines(results))] + _target_lines(results)
    return "\n".join(out)


def markdown(results: dict) -> str:
    m = results["machine"]
    head, rows = _rows(results)
    out = [
        "# secagg benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}, "
        f"cryptography {m['cryptography']} ({m['openssl']}).",
        "",
        "Times are seconds for one round; `client s` is the median client's total protocol time, "
        "`server s` the server's. `limit` is the mask expansion and addition that party must do, at "
        "this machine's AES-CTR and add throughput measured in the same run; `x lim` is the ratio.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Machine limits measured in this run:",
        "",
        *(f"- {line}" for line in _limits_lines(results)),
        "",
    ]
    targets = _target_lines(results)
    if targets:
        out += ["Targets:", "", *(f"- {line}" for line in targets), ""]
    return "\n".join(out)


def plots(results: dict, out_dir: Path) -> list[Path]:
    """Client and server time against n and against d, with the limit and the peer (10% dropout
    where present, else the first dropout in the run)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = results["scenarios"]
    dropouts = sorted({r["dropout"] for r in rows})
    f = 0.1 if 0.1 in dropouts else dropouts[0]
    rows = [r for r in rows if r["dropout"] == f]
    written = []
    for axis, other in (("dim", "clients"), ("clients", "dim")):
        fixed_values = sorted({r[other] for r in rows})
        for who in ("client", "server"):
            fig, ax = plt.subplots(figsize=(6, 4))
            for fixed in fixed_values:
                sel = sorted((r for r in rows if r[other] == fixed), key=lambda r: r[axis])
                if len(sel) < 2:
                    continue
                xs = [r[axis] for r in sel]
                key = "client_seconds_median" if who == "client" else "server_seconds"
                line, = ax.plot(xs, [r[key] for r in sel], "o-", label=f"secagg ({other} = {fixed:,})")
                ax.plot(xs, [r[f"{who}_limit_seconds"] for r in sel], "--", color=line.get_color(),
                        label=f"machine limit ({other} = {fixed:,})")
                peer_key = "peer_client_seconds_median" if who == "client" else "peer_server_seconds"
                peer = [(r[axis], r[peer_key]) for r in sel if peer_key in r]
                if peer:
                    ax.plot(*zip(*peer), "s:", color=line.get_color(), alpha=0.6,
                            label=f"Flower SecAgg+ ({other} = {fixed:,})")
            if not ax.lines:
                plt.close(fig)
                continue
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("vector length d" if axis == "dim" else "clients n")
            ax.set_ylabel(f"{who} seconds per round")
            ax.set_title(f"{who} time vs {'d' if axis == 'dim' else 'n'}, {int(f * 100)}% dropout")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{who}_vs_{'d' if axis == 'dim' else 'n'}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written
