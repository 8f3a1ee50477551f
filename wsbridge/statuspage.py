"""A live status page: processes, groups, members, rates and drops, pushed over wsbridge itself.

Turn it on with ``wrap(app, status_path="/_wsbridge/status", status_token="...")``
(off by default). ``GET /_wsbridge/status?token=...`` answers one HTML page; its
script opens a WebSocket to ``/_wsbridge/status/ws?token=...``, which
:class:`StatusConsumer` serves, sending a snapshot (:func:`collect`) every
``StatusConsumer.interval`` seconds.

Who may look: a request with the token (``?token=`` or ``Authorization:
Bearer``), or, under Django, a logged-in staff user (``scope["user"].is_staff``;
the page as a view is :func:`wsbridge_django.statuspage.status_view`). With
neither a token configured nor a staff user, everybody is refused: the
page shows group names and traffic, which are not for the public.

Rates: this process's from its live counters (:data:`wsbridge.metrics.STATS`),
the others' from two successive heartbeats (every 5 s, see :mod:`wsbridge.heartbeat`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from . import metrics as _metrics
from .consumers.consumer import WebsocketConsumer
from .drops import drop_counts
from .exceptions import WSBridgeError
from .heartbeat import read_processes, snapshot
from .process import identity

__all__ = [
    "StatusConsumer",
    "collect",
    "page_html",
    "status_app",
    "consumer_for",
    "token_ok",
    "register_rate_gauges",
    "MAX_GROUPS",
]

logger = logging.getLogger("wsbridge.statuspage")

#: Groups shown at most (the biggest first), so a site with many rooms stays cheap.
MAX_GROUPS = 50


def _totals() -> tuple[int, int]:
    stats = _metrics.STATS
    received = sum(getattr(stats, f"{t}_messages_in") for t in _metrics.TRANSPORTS)
    sent = sum(getattr(stats, f"{t}_messages_out") for t in _metrics.TRANSPORTS)
    return received, sent


def register_rate_gauges() -> None:
    """Publish this process's message totals in its heartbeat (others' rates come from them)."""
    from .heartbeat import register_gauge

    register_gauge("messages_received", lambda: _totals()[0])
    register_gauge("messages_sent", lambda: _totals()[1])


class _Rates:
    """Messages per second, from two readings of running totals."""

    def __init__(self) -> None:
        self.previous: dict[str, tuple[float, float, float]] = {}

    def rate(self, key: str, at: float, received: float, sent: float) -> dict[str, float]:
        before = self.previous.get(key)
        self.previous[key] = (at, received, sent)
        if before is None or at <= before[0]:
            return {"received_per_s": 0.0, "sent_per_s": 0.0}
        span = at - before[0]
        return {
            "received_per_s": round(max(0.0, received - before[1]) / span, 1),
            "sent_per_s": round(max(0.0, sent - before[2]) / span, 1),
        }


def _groups(stats: dict[str, Any]) -> dict[str, int]:
    groups: dict[str, int] = {}
    if "shards" in stats:
        for shard in stats["shards"]:
            for name, count in (shard.get("groups") or {}).items():
                groups[name] = groups.get(name, 0) + int(count)
    else:
        groups = {k: int(v) for k, v in (stats.get("groups") or {}).items()}
    biggest = sorted(groups.items(), key=lambda item: (-item[1], item[0]))[:MAX_GROUPS]
    return dict(biggest)


def collect(layer: Any, rates: _Rates | None = None) -> dict[str, Any]:
    """One snapshot for the page: processes (with rates), groups and members, drops."""
    rates = rates or _Rates()
    now = time.time()
    try:
        stats = layer.stats()
        error = None
    except WSBridgeError as exc:
        stats, error = {}, str(exc)
    try:
        processes = read_processes(layer) if "shared" in layer.extensions else []
    except WSBridgeError as exc:
        processes, error = [], str(exc)
    me = identity()
    if not any(p.get("id") == me for p in processes):
        processes.append(snapshot())
    shown = []
    for proc in processes:
        entry = dict(proc)
        entry["uptime_s"] = round(max(0.0, float(proc.get("beat", now)) - proc["started"]), 1)
        if proc.get("id") == me:  # live counters, not the last heartbeat
            received, sent = _totals()
            entry["drops"] = drop_counts()
            entry["rates"] = rates.rate(me, now, received, sent)
            entry["this_process"] = True
        else:
            gauges = proc.get("gauges") or {}
            entry["rates"] = rates.rate(
                str(proc.get("id")),
                float(proc.get("beat", 0)),
                float(gauges.get("messages_received", 0)),
                float(gauges.get("messages_sent", 0)),
            )
        shown.append(entry)
    groups = _groups(stats)
    return {
        "time": now,
        "layer": type(layer).__name__,
        "error": error,
        "processes": shown,
        "groups": groups,
        "members": sum(groups.values()),
        "drops": _sum_drops(shown),
    }


def _sum_drops(processes: Iterable[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for proc in processes:
        for reason, count in (proc.get("drops") or {}).items():
            total[reason] = total.get(reason, 0) + int(count)
    return total


def token_ok(given: str | None, token: str | None) -> bool:
    """Constant-time comparison; no configured token never matches."""
    return bool(token) and given is not None and hmac.compare_digest(given, str(token))


def _query_token(query: bytes | str) -> str | None:
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    values = parse_qs(text).get("token")
    return values[0] if values else None


class StatusConsumer(WebsocketConsumer):
    """Pushes :func:`collect` snapshots as JSON text frames to an allowed viewer.

    ``token`` is set on the subclass :func:`status_app` builds; a Django staff
    user (``scope["user"].is_staff``) is allowed without it. Others are
    refused (403).
    """

    token: str | None = None
    interval: float = 1.0

    def connect(self) -> None:
        user = self.scope.get("user")
        staff = bool(user is not None and getattr(user, "is_staff", False))
        if not staff and not token_ok(
            _query_token(self.scope.get("query_string", b"")), self.token
        ):
            logger.info("status page viewer refused: no token and not staff")
            self.close()
            return
        self.accept()
        import gevent

        self._ticker = gevent.spawn(self._tick)

    def _tick(self) -> None:
        import gevent

        layer = self.channel_layer
        rates = _Rates()
        while True:
            try:
                data = collect(layer, rates)
            except Exception:  # the page must not take the connection down with a traceback
                logger.exception("status snapshot failed")
                data = {"error": "snapshot failed (see the server log)"}
            self.send(text_data=json.dumps(data, default=str))
            gevent.sleep(self.interval)

    def disconnect(self, code: int) -> None:
        ticker = getattr(self, "_ticker", None)
        if ticker is not None:
            ticker.kill(block=False)


def consumer_for(token: str | None, interval: float = 1.0) -> type[StatusConsumer]:
    """A :class:`StatusConsumer` subclass holding ``token``."""
    return type("StatusConsumer", (StatusConsumer,), {"token": token, "interval": interval})


def status_app(token: str | None, ws_path: str) -> Callable[..., Iterable[bytes]]:
    """The WSGI app answering the page: 401 without the token (Django: use the view)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = _query_token(environ.get("QUERY_STRING", ""))
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.startswith("Bearer "):
            given = header[7:]
        if not token_ok(given, token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"the status page needs ?token=<status_token>\n"]
        body = page_html(ws_path, given).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
            ],
        )
        return [body]

    return app


def page_html(ws_path: str, token: str | None = None) -> str:
    """The page; its script connects to ``ws_path`` (with ``token``, when given)."""
    config = json.dumps({"path": ws_path, "token": token})
    # Safe inside <script>: no "<", ">" or "&" can end it or start markup.
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("__CONFIG__", config)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsbridge status</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #111; background: #fff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 1.4em; }
table { border-collapse: collapse; min-width: 40em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #e8eef7; } .drop { color: #b00020; font-weight: bold; }
#state { padding: 2px 8px; border-radius: 4px; background: #ddd; }
#state.live { background: #2e7d32; color: #fff; }
</style></head>
<body>
<h1>wsbridge status <span id="state">connecting</span></h1>
<p id="summary"></p>
<h2>Processes</h2>
<table id="processes"><thead><tr><th>process</th><th>role</th><th>up (s)</th>
<th>connections</th><th>received/s</th><th>sent/s</th><th>drops</th></tr></thead>
<tbody></tbody></table>
<h2>Groups</h2>
<table id="groups"><thead><tr><th>group</th><th>members</th></tr></thead><tbody></tbody></table>
<h2>Drops</h2>
<table id="drops"><thead><tr><th>reason</th><th>messages</th></tr></thead><tbody></tbody></table>
<script>
const CONFIG = __CONFIG__;
window.statusUpdates = 0;
function cell(row, text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; row.appendChild(td);
}
function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map(values => {
    const tr = document.createElement("tr");
    values.forEach(v => cell(tr, v[0], v[1])); return tr;
  }));
}
function render(data) {
  window.lastStatus = data; window.statusUpdates += 1;
  document.getElementById("summary").textContent = data.error ? ("error: " + data.error) :
    `layer ${data.layer}: ${data.processes.length} process(es), ` +
    `${Object.keys(data.groups).length} group(s), ${data.members} member(s)`;
  fill("processes", data.processes.map(p => {
    const g = p.gauges || {}, drops = Object.values(p.drops || {}).reduce((a, b) => a + b, 0);
    return [[p.id + (p.this_process ? " (this)" : "")], [p.role], [p.uptime_s],
      [`ws ${g.websockets || 0}, long-poll ${g.longpoll_sessions || 0}, sse ${g.sse_streams || 0}`],
      [p.rates.received_per_s], [p.rates.sent_per_s], [drops, drops ? "drop" : ""]];
  }));
  fill("groups", Object.entries(data.groups).map(([name, n]) => [[name], [n]]));
  fill("drops", Object.entries(data.drops).map(([reason, n]) => [[reason], [n, "drop"]]));
}
function open() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const query = CONFIG.token ? "?token=" + encodeURIComponent(CONFIG.token) : "";
  const ws = new WebSocket(scheme + location.host + CONFIG.path + query);
  const state = document.getElementById("state");
  ws.onopen = () => { state.textContent = "live"; state.className = "live"; };
  ws.onmessage = event => render(JSON.parse(event.data));
  ws.onclose = () => {
    state.textContent = "reconnecting"; state.className = ""; setTimeout(open, 2000);
  };
}
open();
</script>
</body></html>
"""
