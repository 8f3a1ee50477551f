"""The ``prometheus_client`` side of :mod:`wsbridge.metrics`: the collectors and the flush.

Imported only once metrics are enabled (``prometheus_client`` is the
``metrics`` extra). :class:`Exporter` holds this process's registry and
copies what changed in :mod:`wsbridge.metrics`' plain counters, timings and
gauges into it; the serving code never calls it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .drops import drop_counts
from .metrics import (
    HANDLER_BUCKETS,
    HANDLER_TIMINGS,
    LAYER_BUCKETS,
    LAYER_TIMINGS,
    STATS,
    TRANSPORTS,
    Timings,
    connection_states,
    layer_history_counts,
    logger,
    longpoll_sessions,
    mailbox_depths,
    presence_entries,
    sse_streams,
)

__all__ = ["Exporter", "METRICS", "MetricSpec", "prometheus", "multiprocess", "refusal_counts"]


def prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        from .exceptions import ConfigurationError
        from .extras import missing_extra

        raise ConfigurationError(
            missing_extra(exc) or f"prometheus_client is not importable: {exc}"
        ) from exc
    return prometheus_client


@dataclass(frozen=True)
class MetricSpec:
    """One ``prometheus_client`` metric: its kind, name, help text and labels."""

    kind: str  # "Counter", "Gauge" or "Histogram"
    name: str
    help: str
    labels: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


_LIVE = {"multiprocess_mode": "livesum"}

#: Every metric of a process, by the key the flush uses (the module docstring of
#: wsbridge.metrics has the table users read).
METRICS: dict[str, MetricSpec] = {
    "connections": MetricSpec(
        "Gauge", "wsbridge_connections", "Open connections", ("transport", "state"), _LIVE
    ),
    "handshakes": MetricSpec(
        "Counter",
        "wsbridge_handshakes",
        "WebSocket opening handshakes by result",
        ("result", "reason"),
    ),
    "messages_in": MetricSpec(
        "Counter", "wsbridge_messages_received", "Messages received from clients", ("transport",)
    ),
    "messages_out": MetricSpec(
        "Counter", "wsbridge_messages_sent", "Messages sent to clients", ("transport",)
    ),
    "bytes_in": MetricSpec(
        "Counter",
        "wsbridge_received_bytes",
        "Payload bytes received from clients",
        ("transport",),
    ),
    "bytes_out": MetricSpec(
        "Counter", "wsbridge_sent_bytes", "Payload bytes sent to clients", ("transport",)
    ),
    "handler": MetricSpec(
        "Histogram",
        "wsbridge_consumer_handler_seconds",
        "Time a consumer spent handling one event",
        ("consumer",),
        {"buckets": HANDLER_BUCKETS},
    ),
    "exceptions": MetricSpec(
        "Counter",
        "wsbridge_consumer_exceptions",
        "Exceptions raised by consumer handlers",
        ("consumer",),
    ),
    "layer": MetricSpec(
        "Histogram",
        "wsbridge_layer_operation_seconds",
        "Channel layer operation latency",
        ("operation",),
        {"buckets": LAYER_BUCKETS},
    ),
    "mailbox": MetricSpec(
        "Gauge",
        "wsbridge_mailbox_messages",
        "Messages waiting in connection mailboxes",
        options=_LIVE,
    ),
    "mailbox_max": MetricSpec(
        "Gauge",
        "wsbridge_mailbox_messages_max",
        "Messages waiting in the fullest mailbox",
        options={"multiprocess_mode": "livemax"},
    ),
    "drops": MetricSpec(
        "Counter",
        "wsbridge_dropped_messages",
        "Messages not delivered, by reason (wsbridge.drops)",
        ("reason",),
    ),
    "longpoll": MetricSpec(
        "Gauge", "wsbridge_longpoll_sessions", "Open long-poll sessions", options=_LIVE
    ),
    "sse": MetricSpec("Gauge", "wsbridge_sse_streams", "Open SSE streams", options=_LIVE),
    "presence": MetricSpec(
        "Gauge",
        "wsbridge_presence_entries",
        "Presence entries held by this process",
        options=_LIVE,
    ),
    "history": MetricSpec(
        "Counter", "wsbridge_history_lookups", "Group history recoveries by result", ("result",)
    ),
    "refusals": MetricSpec(
        "Counter",
        "wsbridge_refusals",
        "Requests the server refused or timed out, by reason (wsbridge.transport.limits)",
        ("reason",),
    ),
}


class Exporter:
    """The ``prometheus_client`` metrics of this process, and what was last flushed."""

    def __init__(self) -> None:
        prom = prometheus()
        self.prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        #: key of METRICS -> the prometheus_client metric
        self.metrics: dict[str, Any] = {
            key: getattr(prom, spec.kind)(
                spec.name, spec.help, list(spec.labels), registry=self.registry, **spec.options
            )
            for key, spec in METRICS.items()
        }
        self.last: dict[str, int] = {}
        self.last_counters: dict[str, Counter[Any]] = {
            "handshakes": Counter(),
            "exceptions": Counter(),
            "history": Counter(),
            "drops": Counter(),
            "refusals": Counter(),
        }
        self.lock = threading.Lock()

    def flush(self) -> None:
        with self.lock:
            self._flush_stats()
            self._flush_counters()
            self._flush_timings(self.metrics["handler"], HANDLER_TIMINGS)
            self._flush_timings(self.metrics["layer"], LAYER_TIMINGS)
            self._flush_gauges()

    def _flush_stats(self) -> None:
        now = STATS.snapshot()
        for key, value in now.items():
            delta = value - self.last.get(key, 0)
            if delta <= 0:
                continue
            transport, _, counter = key.partition("_")  # "websocket_bytes_in"
            self.metrics[counter].labels(transport).inc(delta)
        self.last = now

    def _flush_counters(self) -> None:
        sources: dict[str, tuple[Counter[Any], Any]] = {
            "handshakes": (STATS.handshakes, lambda k: self.metrics["handshakes"].labels(*k)),
            "exceptions": (STATS.consumer_exceptions, self.metrics["exceptions"].labels),
            "history": (Counter(layer_history_counts()), self.metrics["history"].labels),
            "drops": (Counter(drop_counts()), self.metrics["drops"].labels),
            "refusals": (Counter(refusal_counts()), self.metrics["refusals"].labels),
        }
        for name, (current, child) in sources.items():
            last = self.last_counters[name]
            for key, value in list(current.items()):
                if value > last[key]:
                    child(key).inc(value - last[key])
                    last[key] = value

    @staticmethod
    def _flush_timings(histogram: Any, timings: dict[str, Timings]) -> None:
        for label, source in list(timings.items()):
            counts, total = source.take()
            if not any(counts):
                continue
            child = histogram.labels(label)
            # prometheus_client keeps per-bucket (non-cumulative) values in
            # child._buckets and the sum in child._sum; adding a whole flush's
            # counts there is what observe() does one value at a time.
            for index, count in enumerate(counts):
                if count:
                    child._buckets[index].inc(count)
            child._sum.inc(total)

    def _flush_gauges(self) -> None:
        for transport in TRANSPORTS:
            for state in ("connecting", "open", "closing"):
                self.metrics["connections"].labels(transport, state).set(0)
        for transport, state, count in connection_states():
            self.metrics["connections"].labels(transport, state).set(count)
        depths = mailbox_depths()
        self.metrics["mailbox"].set(sum(depths))
        self.metrics["mailbox_max"].set(max(depths, default=0))
        sessions = longpoll_sessions()
        self.metrics["longpoll"].set(sessions)
        self.metrics["sse"].set(sse_streams())
        try:
            self.metrics["presence"].set(presence_entries())
        except Exception:  # a hook must never break a scrape
            logger.debug("presence entries hook failed", exc_info=True)


def refusal_counts() -> dict[str, int]:
    """The server's refusal counters (issue 11's ``wsbridge.transport.limits``), if present."""
    try:
        from .transport import limits
    except ImportError:
        return {}  # that module is not part of this version
    counts = getattr(limits, "refusal_counts", None)
    return dict(counts()) if callable(counts) else {}


def multiprocess() -> Any:
    """``prometheus_client.multiprocess`` (its functions carry no annotations)."""
    from prometheus_client import multiprocess as module

    return module
