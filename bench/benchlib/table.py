"""Tables of a run's results: plain text for the terminal, RST for the docs."""

from __future__ import annotations

from typing import Any

Row = list[str]


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _others(r: dict[str, Any]) -> str:
    """Cores busy with work not ours during the measurement (other processes on the machine)."""
    m = r.get("machine")
    return _f(m.get("others_cores"), 2) if m else "-"


def _steal(r: dict[str, Any]) -> str:
    """Cores' worth of CPU the hypervisor gave other guests during the measurement."""
    m = r.get("machine")
    return _f(m.get("steal_cores"), 2) if m and "steal_cores" in m else "-"


def _fail(r: dict[str, Any]) -> str:
    return "FAILED: " + str(r.get("error", "?"))[:70]


def fanout_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    head = [
        "target",
        "clients",
        "delivered",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU",
        "µs/delivery",
        "client CPU",
        "ramp s",
        "others",
        "steal",
    ]
    rows = []
    for r in results:
        if r.get("workload") != "fanout":
            continue
        if not r.get("ok"):
            rows.append([r["target"], _f(r["clients"]), _fail(r), *[""] * (len(head) - 3)])
            continue
        c = r["client"]
        lat = c.get("latency_ms", {})
        rows.append(
            [
                r["target"],
                _f(c["connected"]) + ("" if c["connected"] == r["clients"] else f"/{r['clients']}"),
                f"{100.0 * c['delivered_ratio']:.2f}%",
                _f(lat.get("p50")),
                _f(lat.get("p99")),
                _f(lat.get("max")),
                _f(r["server_cpu"]["cpu_ratio"], 2),
                _f(r.get("server_us_per_delivery")),
                _f(c["measure_cpu"]["cpu_ratio"], 2),
                _f(c.get("ramp_s")),
                _others(r),
                _steal(r),
            ]
        )
    return head, rows


def echo_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    head = [
        "target",
        "mode",
        "clients",
        "msgs/s",
        "RTT p50 ms",
        "RTT p99 ms",
        "server CPU",
        "client CPU",
        "others",
        "steal",
    ]
    rows = []
    for r in results:
        if r.get("workload") != "echo":
            continue
        mode = "closed loop" if r.get("closed_loop") else "every 50 ms"
        if not r.get("ok"):
            rows.append([r["target"], mode, _f(r["clients"]), _fail(r), "", "", "", ""])
            continue
        c = r["client"]
        if not r.get("closed_loop"):
            mode = f"every {c['interval_ms']} ms"
        rows.append(
            [
                r["target"],
                mode,
                _f(c["connected"]),
                _f(c["msgs_per_s"], 0),
                _f(c["rtt_ms"].get("p50")),
                _f(c["rtt_ms"].get("p99")),
                _f(r["server_cpu"]["cpu_ratio"], 2),
                _f(r["client_cpu"]["cpu_ratio"], 2),
                _others(r),
                _steal(r),
            ]
        )
    return head, rows


def idle_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    head = [
        "target",
        "sockets",
        "open at end",
        "KB per socket",
        "RSS before MB",
        "RSS after MB",
        "processes",
    ]
    rows = []
    for r in results:
        if r.get("workload") != "idle":
            continue
        if not r.get("ok"):
            rows.append([r["target"], _f(r["clients"]), _fail(r), "", "", "", ""])
            continue
        c = r["client"]
        rows.append(
            [
                r["target"],
                _f(c["connected"]),
                _f(c["still_open"]),
                _f(r["kb_per_connection"]),
                _f(r["rss_before_kb"] / 1024),
                _f(r["rss_after_kb"] / 1024),
                str(len(r.get("rss_per_process_kb", {}))),
            ]
        )
    return head, rows


def handshake_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    head = [
        "target",
        "concurrency",
        "handshakes/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "server CPU",
        "client CPU",
        "others",
        "steal",
    ]
    rows = []
    for r in results:
        if r.get("workload") != "handshake":
            continue
        if not r.get("ok"):
            rows.append([r["target"], "", _fail(r), "", "", "", "", ""])
            continue
        c = r["client"]
        rows.append(
            [
                r["target"],
                _f(c["concurrency"]),
                _f(c["handshakes_per_s"], 0),
                _f(c["handshake_ms"].get("p50")),
                _f(c["handshake_ms"].get("p99")),
                _f(c["failed"]),
                _f(r["server_cpu"]["cpu_ratio"], 2),
                _f(r["client_cpu"]["cpu_ratio"], 2),
                _others(r),
                _steal(r),
            ]
        )
    return head, rows


def external_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    head = ["workload", "result"]
    rows = []
    for r in results:
        if r.get("workload") not in ("layer", "longpoll"):
            continue
        if r.get("skipped"):
            rows.append([r["workload"], "skipped: " + r["skipped"]])
        elif not r.get("ok"):
            rows.append([r["workload"], _fail(r)])
        else:
            rows.append([r["workload"], summarize_external(r.get("report"))])
    return head, rows


def summarize_external(report: Any) -> str:
    """One line from another helper's JSON report: its numeric top-level figures."""
    if not isinstance(report, dict):
        return str(report)[:120]
    if isinstance(report.get("summary"), str):
        return report["summary"]
    parts: list[str] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            parts.append(f"{prefix}={_f(value)}")
        elif isinstance(value, dict) and depth < 3:  # {"all": {"p50_ms": ..}} -> all.p50_ms
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)

    walk("", report, 0)
    return ", ".join(parts)[:600] or "see results.json"


SECTIONS = [
    ("Fan-out (group send from a separate process)", fanout_rows),
    ("Echo", echo_rows),
    ("Idle sockets", idle_rows),
    ("Handshakes", handshake_rows),
    ("Layer and long-poll (scripts of their own)", external_rows),
]


def text_table(head: Row, rows: list[Row]) -> str:
    rows = [r + [""] * (len(head) - len(r)) for r in rows]  # a failure row has fewer cells
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def rst_table(head: Row, rows: list[Row]) -> str:
    """An RST list-table (safe for any cell width)."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [head, *rows]:
        out.append("   * - " + (cells[0] or " "))
        for cell in cells[1:]:
            out.append("     - " + (cell or " "))
    return "\n".join(out)


def goal_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    from .goals import GOAL_HEAD, check

    return GOAL_HEAD, check(results)


SECTIONS.append(("Goals (issue 7), from this run", goal_rows))


def _key_figure(r: dict[str, Any]) -> float:
    """The figure a trial is ranked by when picking the median of repeated trials."""
    c = r.get("client", {})
    w = r.get("workload")
    if w == "fanout":
        # undelivered messages rank as worse than any latency
        return (1.0 - c.get("delivered_ratio", 0)) * 1e9 + (c.get("latency_ms", {}).get("p99") or 0)
    if w == "echo":
        return -(c.get("msgs_per_s") or 0)
    if w == "idle":
        return r.get("kb_per_connection") or 0
    if w == "handshake":
        return -(c.get("handshakes_per_s") or 0)
    return 0.0


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (target, workload, clients, mode): the median trial when repeated.

    Failed trials rank last; the chosen record says how many trials there were.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    order: list[tuple] = []
    for r in results:
        key = (r.get("target"), r.get("workload"), r.get("clients"), bool(r.get("closed_loop")))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    out = []
    for key in order:
        trials = groups[key]
        if len(trials) == 1:
            out.append(trials[0])
            continue
        ok = sorted((t for t in trials if t.get("ok")), key=_key_figure)
        pick = dict(ok[(len(ok) - 1) // 2] if ok else trials[0])
        pick["trials"] = len(trials)
        pick["trials_ok"] = len(ok)
        out.append(pick)
    return out


def print_table(meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    m = meta.get("machine", {})
    print(
        f"\nrun {meta.get('run_id')}: {m.get('nproc')} cores, {m.get('cpu_model')}, "
        f"{m.get('memory_gib')} GiB; {meta.get('pinning')}"
    )
    results = medians(results)
    if any("trials" in r for r in results):
        print("(repeated measurements: each row is the median trial; of two, the better one)")
    for title, fn in SECTIONS:
        head, rows = fn(results)
        if rows:
            print(f"\n{title}\n{text_table(head, rows)}")
