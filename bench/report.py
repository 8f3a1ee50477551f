#!/usr/bin/env python3
"""Plots and the docs table from one run: ``bench/.venvs/tools/bin/python bench/report.py RESULTS``.

``RESULTS`` is a ``bench/results/<run>/results.json`` (``bench/results/latest/results.json``
by default). Writes PNG plots (matplotlib) into ``docs/topics/_static/`` and
replaces the generated part of ``docs/topics/performance.rst`` (between the
``BEGIN GENERATED`` and ``END GENERATED`` comments); the hand-written notes
around it stay as they are. ``run.py --report`` calls this after a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO_DIR, RESULTS_DIR  # noqa: E402
from benchlib.table import SECTIONS, medians, rst_table  # noqa: E402

DOC = REPO_DIR / "docs" / "topics" / "performance.rst"
STATIC = REPO_DIR / "docs" / "topics" / "_static"
BEGIN = ".. BEGIN GENERATED (bench/report.py rewrites this part)"
END = ".. END GENERATED"
COLORS = {
    "wsbridge": "#1f77b4",
    "wsbridge-redis": "#17becf",
    "wsbridge-uwsgi": "#bcbd22",
    "wsbridge-fastpath": "#9467bd",
    "channels": "#2ca02c",
    "socketio": "#d62728",
    "raw": "#7f7f7f",
}


def load_samples(run_dir: Path, rel: str | None) -> list[float]:
    if not rel:
        return []
    path = run_dir / rel
    if not path.exists():
        return []
    return sorted(json.loads(path.read_text()))


def cdf_points(values: list[float], points: int = 800) -> tuple[list[float], list[float]]:
    """(x, y) of the empirical CDF, thinned to about ``points`` points."""
    n = len(values)
    if n == 0:
        return [], []
    step = max(1, n // points)
    idx = list(range(0, n, step)) + [n - 1]
    return [max(values[i], 0.01) for i in idx], [100.0 * (i + 1) / n for i in idx]


def plot_cdfs(
    plt: Any, title: str, series: list[tuple[str, list[float]]], xlabel: str, out: Path
) -> bool:
    series = [(name, vals) for name, vals in series if vals]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for name, vals in series:
        x, y = cdf_points(vals)
        p99 = vals[min(len(vals) - 1, int(0.99 * len(vals)))]
        ax.plot(
            x,
            y,
            label=f"{name} (p99 {p99:,.0f} ms, n={len(vals):,})",
            color=COLORS.get(name.split()[0]),
            linewidth=1.6,
        )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of messages at or below")
    ax.set_ylim(0, 100.5)
    ax.axhline(99, color="#bbbbbb", linewidth=0.8, linestyle="--")
    ax.grid(True, which="both", alpha=0.25)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def plot_bars(plt: Any, results: list[dict[str, Any]], out: Path) -> bool:
    panels = []
    idle = [
        (r["target"], r["kb_per_connection"])
        for r in results
        if r.get("workload") == "idle" and r.get("ok") and r.get("clients") == 5000
    ]
    if idle:
        panels.append(("idle: KB per socket (5,000)", idle, 24.0))
    hs = [
        (r["target"], r["client"]["handshakes_per_s"])
        for r in results
        if r.get("workload") == "handshake" and r.get("ok")
    ]
    if hs:
        panels.append(("handshakes/s (concurrency 100)", hs, None))
    echo = [
        (r["target"], r["client"]["msgs_per_s"])
        for r in results
        if r.get("workload") == "echo" and r.get("ok") and r.get("closed_loop")
    ]
    if echo:
        panels.append(("echo msgs/s, 200 clients, closed loop", echo, None))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6), dpi=110)
    if len(panels) == 1:
        axes = [axes]
    for ax, (title, data, line) in zip(axes, panels, strict=True):
        names = [d[0] for d in data]
        ax.bar(
            range(len(data)), [d[1] for d in data], color=[COLORS.get(n, "#999999") for n in names]
        )
        ax.set_xticks(range(len(data)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.25)
        if line:
            ax.axhline(line, color="black", linewidth=0.8, linestyle="--")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def make_plots(run_dir: Path, results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Draw every plot; returns (file name, caption) of those drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    STATIC.mkdir(parents=True, exist_ok=True)
    drawn = []
    sizes = sorted({r["clients"] for r in results if r.get("workload") == "fanout"})
    for n in sizes:
        series = [
            (r["target"], load_samples(run_dir, r.get("samples")))
            for r in results
            if r.get("workload") == "fanout" and r.get("clients") == n and r.get("ok")
        ]
        name = f"perf-fanout-{n}.png"
        if plot_cdfs(
            plt,
            f"Fan-out to {n:,} sockets: delivery latency (publish call to socket)",
            series,
            "latency, ms (log)",
            STATIC / name,
        ):
            drawn.append(
                (name, f"Fan-out to {n:,} clients: distribution of delivery latency per target.")
            )
    for closed, label in ((False, "every 50 ms"), (True, "closed loop")):
        series = [
            (r["target"], load_samples(run_dir, r.get("samples")))
            for r in results
            if r.get("workload") == "echo" and r.get("ok") and bool(r.get("closed_loop")) == closed
        ]
        name = f"perf-echo-{'closed' if closed else 'open'}.png"
        if plot_cdfs(
            plt, f"Echo, 200 clients, {label}: round trip", series, "RTT, ms (log)", STATIC / name
        ):
            drawn.append((name, f"Echo ({label}): distribution of round-trip times per target."))
    series = [
        (r["target"], load_samples(run_dir, r.get("samples")))
        for r in results
        if r.get("workload") == "handshake" and r.get("ok")
    ]
    if plot_cdfs(
        plt,
        "Handshakes at concurrency 100: connect to open",
        series,
        "ms (log)",
        STATIC / "perf-handshake.png",
    ):
        drawn.append(("perf-handshake.png", "Handshake latency (TCP connect to open) per target."))
    if plot_bars(plt, results, STATIC / "perf-summary.png"):
        drawn.append(
            (
                "perf-summary.png",
                "Idle memory per socket (dashed: the 24 KB goal), "
                "handshakes/s and echo throughput.",
            )
        )
    return drawn


def versions_rst(meta: dict[str, Any]) -> str:
    lines = []
    for venv, pkgs in meta.get("versions", {}).items():
        pretty = ", ".join(f"{k} {v}" for k, v in pkgs.items())
        lines.append(f"  - ``{venv}``: {pretty}")
    return "\n".join(lines)


def generated_rst(
    meta: dict[str, Any], results: list[dict[str, Any]], plots: list[tuple[str, str]]
) -> str:
    m = meta["machine"]
    opts = meta.get("options", {})
    out = [
        BEGIN,
        "",
        f"Latest run: ``{meta['run_id']}`` "
        f"(``python bench/run.py {' '.join(meta.get('argv', []))}``).",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}; Python {m['python']}, Node.js {m['node']} with ws {m['ws']}; "
        f"Redis {meta.get('redis')}.",
        f"- Pinning: {meta.get('pinning')}.",
        f"- Fan-out: {opts.get('count')} messages, one every {opts.get('interval')} s, "
        f"from a separate process; stragglers awaited {opts.get('grace')} s. "
        f"Echo: {opts.get('echo_duration')} s. "
        f"Handshakes: {opts.get('handshake_duration')} s.",
        "- Versions:",
        "",
        versions_rst(meta),
        "",
        (
            "Each measurement was repeated, round-robin over the targets; every row is the "
            "median trial (of two, the better one for every target alike). "
            if any("trials" in r for r in results)
            else ""
        )
        + "The *others* column is CPU (in cores) that processes outside the bench used during the "
        "measurement: the machine is shared, and a run with high *others* is noisier.",
        "",
    ]
    for title, fn in SECTIONS:
        head, rows = fn(results)
        if not rows:
            continue
        out += [title, "~" * len(title), "", rst_table(head, rows), ""]
    if plots:
        out += ["Plots", "~~~~~", ""]
        for name, caption in plots:
            out += [f".. figure:: _static/{name}", "   :width: 100%", "", f"   {caption}", ""]
    out.append(END)
    return "\n".join(out)


SKELETON = """Performance
===========

{generated}
"""


def write_doc(generated: str) -> None:
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(head + generated + tail)
            return
        DOC.write_text(text.rstrip() + "\n\n" + generated + "\n")
        return
    DOC.write_text(SKELETON.format(generated=generated))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "results", nargs="?", type=Path, default=RESULTS_DIR / "latest" / "results.json"
    )
    parser.add_argument("--no-doc", action="store_true", help="plots only")
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    run_dir = args.results.resolve().parent
    data["results"] = medians(data["results"])
    plots = make_plots(run_dir, data["results"])
    print("plots:", ", ".join(p for p, _ in plots) or "none")
    if not args.no_doc:
        write_doc(generated_rst(data["meta"], data["results"], plots))
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
