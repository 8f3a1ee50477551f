"""Each process tells the others it is alive, and what it has lost: ``wsbridge status``.

A serving process (a wrapped app that took its first request, a worker)
runs one :class:`Heartbeat` greenlet per shared layer. Every ``interval``
seconds it publishes :func:`snapshot` through the layer
(``layer.publish_process``) with a time-to-live of ``ttl`` seconds, so a
process that died or was killed vanishes from the listing by itself.

The snapshot is plain data (msgpack types), built from the same counters a
metrics exporter reads (:func:`wsbridge.drops.drop_counts`, the gauges
registered here), so Prometheus collectors can reuse it as it is::

    {"id": "web-1:4242", "host": "web-1", "pid": 4242, "role": "server",
     "started": 1733100000.0, "beat": 1733100042.0,
     "gauges": {"websockets": 12}, "drops": {"mailbox_full": 3},
     "refusals": {"header_timeout": 2}}

``refusals`` holds what the process turned away or cut off (a bad request,
a timeout, a limit: :func:`wsbridge.transport.limits.refused`), once its
transport registered them (:func:`register_counts`); a worker has none.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .drops import drop_counts
from .exceptions import LayerError
from .process import identity

__all__ = [
    "Heartbeat",
    "snapshot",
    "register_counts",
    "register_gauge",
    "start_heartbeat",
    "read_processes",
    "INTERVAL",
    "TTL",
]

logger = logging.getLogger("wsbridge.heartbeat")

#: Seconds between two heartbeats, and how long one stays visible.
INTERVAL = 5.0
TTL = 15.0

_started_at = time.time()
_gauges: dict[str, Callable[[], float]] = {}
_counts: dict[str, Callable[[], dict[str, int]]] = {}
_running: dict[int, Heartbeat] = {}


def register_gauge(name: str, read: Callable[[], float]) -> None:
    """Report ``read()`` under ``gauges[name]`` in every snapshot (e.g. open WebSockets)."""
    _gauges[name] = read


def register_counts(name: str, read: Callable[[], dict[str, int]]) -> None:
    """Report ``read()`` (counts by reason) under ``name`` in every snapshot."""
    _counts[name] = read


def snapshot(role: str = "server") -> dict[str, Any]:
    """This process's heartbeat: who it is, its gauges and its drop counters."""
    gauges: dict[str, float] = {}
    for name, read in list(_gauges.items()):
        try:
            gauges[name] = read()
        except Exception:  # a gauge must never stop the heartbeat
            logger.debug("gauge %s failed", name, exc_info=True)
    beat = {
        "id": identity(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "role": role,
        "started": _started_at,
        "beat": time.time(),
        "gauges": gauges,
        "drops": drop_counts(),
    }
    for name, counts in list(_counts.items()):
        try:
            beat[name] = dict(counts())
        except Exception:  # nor may a counter
            logger.debug("counts %s failed", name, exc_info=True)
    return beat


class Heartbeat:
    """The greenlet publishing :func:`snapshot` through ``layer`` every ``interval`` s."""

    def __init__(
        self, layer: Any, role: str = "server", interval: float = INTERVAL, ttl: float = TTL
    ) -> None:
        self.layer = layer
        self.role = role
        self.interval = interval
        self.ttl = max(ttl, 2 * interval)
        self._greenlet: Any = None

    def beat(self) -> bool:
        """Publish one snapshot now; False (logged at DEBUG) when the layer is down."""
        try:
            self.layer.publish_process(identity(), snapshot(self.role), self.ttl)
        except LayerError as exc:
            logger.debug("heartbeat not published: %s", exc)
            return False
        return True

    def start(self) -> Heartbeat:
        import gevent

        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        return self

    def _run(self) -> None:
        import gevent

        try:
            while not self.layer.closed:
                self.beat()
                gevent.sleep(self.interval)
        finally:
            if _running.get(id(self.layer)) is self:
                del _running[id(self.layer)]  # a closed layer is not kept alive here

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None


def start_heartbeat(layer: Any, role: str = "server") -> Heartbeat | None:
    """Start (once per layer and process) the heartbeat of a shared layer; else None.

    An unshared layer (in-memory) has nobody to tell: nothing starts.
    """
    if "shared" not in getattr(layer, "extensions", ()):
        return None
    key = id(layer)
    running = _running.get(key)
    if running is not None and running.layer is layer and running._greenlet is not None:
        return running
    heartbeat = _running[key] = Heartbeat(layer, role).start()
    return heartbeat


def read_processes(layer: Any) -> list[dict[str, Any]]:
    """Every live process's heartbeat on ``layer``, by host then pid."""
    return sorted(layer.processes(), key=lambda p: (str(p.get("host")), int(p.get("pid", 0))))
