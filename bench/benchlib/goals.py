"""The issue's goals, checked against one run's results (ratios from the same run)."""

from __future__ import annotations

from typing import Any

WSBRIDGE_TARGETS = (
    "wsbridge",
    "wsbridge-redis",
    "wsbridge-fastpath",
    "wsbridge-metrics",
    "wsbridge-redis1",
    "wsbridge-redis1-metrics",
    "wsbridge-uwsgi",
)


def _find(
    results: list[dict[str, Any]],
    target: str,
    workload: str,
    clients: int | None = None,
    closed_loop: bool | None = None,
) -> dict[str, Any] | None:
    for r in results:
        if r.get("target") != target or r.get("workload") != workload or not r.get("ok"):
            continue
        if clients is not None and r.get("clients") != clients:
            continue
        if closed_loop is not None and bool(r.get("closed_loop")) != closed_loop:
            continue
        return r
    return None


def _p99(r: dict[str, Any] | None) -> float | None:
    return r["client"]["latency_ms"].get("p99") if r else None


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT met")


def check(results: list[dict[str, Any]]) -> list[list[str]]:
    """Rows: goal, target, figure, reference, verdict."""
    rows: list[list[str]] = []
    for target in WSBRIDGE_TARGETS:
        for n in (3000, 5000):
            r = _find(results, target, "fanout", n)
            if r is None:
                continue
            ratio = r["client"]["delivered_ratio"]
            rows.append(
                [
                    f"fan-out {n:,}: 100% delivered",
                    target,
                    f"{100 * ratio:.2f}%",
                    "100%",
                    _verdict(ratio >= 1.0),
                ]
            )
            p99 = _p99(r)
            sio = _p99(_find(results, "socketio", "fanout", n))
            raw = _p99(_find(results, "raw", "fanout", n))
            if sio:
                rows.append(
                    [
                        f"fan-out {n:,}: p99 <= 1/3 of python-socketio",
                        target,
                        f"{p99:,.0f} ms",
                        f"{sio / 3:,.0f} ms (socketio {sio:,.0f})",
                        _verdict(p99 <= sio / 3),
                    ]
                )
            if raw:
                rows.append(
                    [
                        f"fan-out {n:,}: p99 <= 1.5x raw floor",
                        target,
                        f"{p99:,.0f} ms",
                        f"{1.5 * raw:,.0f} ms (raw {raw:,.0f})",
                        _verdict(p99 <= 1.5 * raw),
                    ]
                )
    r = _find(results, "wsbridge-redis", "fanout", 10000)
    if r is not None:
        ratio = r["client"]["delivered_ratio"]
        rows.append(
            [
                "fan-out 10,000 over two processes: 100%",
                "wsbridge-redis",
                f"{100 * ratio:.2f}%",
                "100%",
                _verdict(ratio >= 1.0),
            ]
        )
    sio_echo = _find(results, "socketio", "echo", closed_loop=True)
    for target in WSBRIDGE_TARGETS:
        r = _find(results, target, "echo", closed_loop=True)
        if r and sio_echo:
            mine, theirs = r["client"]["msgs_per_s"], sio_echo["client"]["msgs_per_s"]
            rows.append(
                [
                    "echo at saturation >= 2x python-socketio",
                    target,
                    f"{mine:,.0f}/s",
                    f"{2 * theirs:,.0f}/s (socketio {theirs:,.0f})",
                    _verdict(mine >= 2 * theirs),
                ]
            )
        r = _find(results, target, "idle", 5000)
        if r:
            kb = r["kb_per_connection"]
            rows.append(
                ["idle: <= 24 KB per socket", target, f"{kb:.1f} KB", "24 KB", _verdict(kb <= 24)]
            )
    r = _find(results, "wsbridge", "idle", 10000)
    if r:
        held = r["client"]["still_open"]
        rows.append(
            [
                "10,000 idle WebSockets in one process",
                "wsbridge",
                f"{held:,} open",
                "10,000",
                _verdict(held >= 10000),
            ]
        )
    sio_hs = _find(results, "socketio", "handshake")
    for target in WSBRIDGE_TARGETS:
        r = _find(results, target, "handshake")
        if r and sio_hs:
            mine, theirs = r["client"]["handshakes_per_s"], sio_hs["client"]["handshakes_per_s"]
            rows.append(
                [
                    "handshakes/s >= 1.25x python-socketio",
                    target,
                    f"{mine:,.0f}/s",
                    f"{1.25 * theirs:,.0f}/s (socketio {theirs:,.0f})",
                    _verdict(mine >= 1.25 * theirs),
                ]
            )
    return rows


GOAL_HEAD = ["goal", "target", "measured", "needed", "verdict"]
