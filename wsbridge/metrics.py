"""Prometheus metrics for wsbridge: what each process serves, receives, sends and loses.

Turn them on with ``wrap(app, metrics_path="/_wsbridge/metrics")`` (or the
Django view :func:`wsbridge_django.metrics.metrics_view`); they are off by
default. Needs the ``metrics`` extra::

    pip install "wsbridge-gevent[metrics]"

How it stays cheap: the serving code only adds to plain integers in
:data:`STATS` (a few attribute increments per message, whether metrics are
on or not), and times consumer handlers and layer calls only once
:func:`enable` ran. :func:`flush` copies what changed into
``prometheus_client`` metrics; it runs before every scrape and, under
gunicorn's multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set), every
:data:`FLUSH_INTERVAL` seconds in each worker, so a scrape answered by one
worker shows every worker's counts (at most that many seconds old).

Gunicorn, several workers: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory before the master starts, and forget dead workers' gauges in the
config file::

    from wsbridge.metrics import gunicorn_child_exit as child_exit

The metric names (Prometheus conventions: base units, ``_total`` counters):

====================================================  ===========  ==========================
name                                                  type         labels
====================================================  ===========  ==========================
``wsbridge_connections``                              gauge        transport, state
``wsbridge_handshakes_total``                         counter      result, reason
``wsbridge_messages_received_total``                  counter      transport
``wsbridge_messages_sent_total``                      counter      transport
``wsbridge_received_bytes_total``                     counter      transport
``wsbridge_sent_bytes_total``                         counter      transport
``wsbridge_consumer_handler_seconds``                 histogram    consumer
``wsbridge_consumer_exceptions_total``                counter      consumer
``wsbridge_layer_operation_seconds``                  histogram    operation
``wsbridge_mailbox_messages``                         gauge        (sum over connections)
``wsbridge_mailbox_messages_max``                     gauge        (the fullest mailbox)
``wsbridge_dropped_messages_total``                   counter      reason (wsbridge.drops)
``wsbridge_longpoll_sessions``                        gauge
``wsbridge_sse_streams``                              gauge
``wsbridge_presence_entries``                         gauge        (hook: presence_entries)
``wsbridge_history_lookups_total``                    counter      result (hit, miss)
``wsbridge_refusals_total``                           counter      reason (server limits)
====================================================  ===========  ==========================
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics_exporter import Exporter

__all__ = [
    "STATS",
    "FLUSH_INTERVAL",
    "HANDLER_BUCKETS",
    "LAYER_BUCKETS",
    "enable",
    "enabled",
    "flush",
    "start_flusher",
    "render",
    "metrics_app",
    "multiprocess_dir",
    "gunicorn_child_exit",
    "record_handshake",
    "record_history_lookup",
    "register_presence_entries",
    "register_longpoll_sessions",
    "instrument_layer",
    "LAYER_OPERATIONS",
    "presence_entries",
    "layer_history_counts",
    "Timings",
]

logger = logging.getLogger("wsbridge.metrics")

#: Seconds between two flushes of a worker's counts in multi-process mode.
FLUSH_INTERVAL = 1.0
#: Histogram buckets (seconds) of consumer handlers and of layer operations.
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAYER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

TRANSPORTS = ("websocket", "longpoll", "sse")
#: The layer methods :func:`instrument_layer` times.
LAYER_OPERATIONS = ("send", "group_send", "receive", "group_add", "group_discard")


class _Stats:
    """Plain counters the serving code adds to (no lock: greenlets of one thread)."""

    def __init__(self) -> None:
        for transport in TRANSPORTS:
            for field in ("messages_in", "messages_out", "bytes_in", "bytes_out"):
                setattr(self, f"{transport}_{field}", 0)
        self.handshakes: Counter[tuple[str, str]] = Counter()
        self.consumer_exceptions: Counter[str] = Counter()
        self.history: Counter[str] = Counter()

    def snapshot(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


#: The counters of this process. Transports do ``STATS.websocket_messages_in += 1``.
STATS: Any = _Stats()


class Timings:
    """A histogram kept as plain bucket counts (bisect + two adds per observation)."""

    __slots__ = ("bounds", "counts", "total", "_lock")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def take(self) -> tuple[list[int], float]:
        """The counts since the last take, and their sum; starts over."""
        with self._lock:
            counts, total = self.counts, self.total
            self.counts, self.total = [0] * len(counts), 0.0
        return counts, total


_enabled = False
#: consumer label -> its handler timings; layer operation -> timings.
HANDLER_TIMINGS: dict[str, Timings] = {}
LAYER_TIMINGS: dict[str, Timings] = {}
_presence: list[Callable[[], float]] = []


def enabled() -> bool:
    """True once :func:`enable` ran in this process (handlers and layer calls are timed)."""
    return _enabled


def handler_timings(consumer: str) -> Timings:
    """The timings of one consumer class (created on first use)."""
    timings = HANDLER_TIMINGS.get(consumer)
    if timings is None:
        timings = HANDLER_TIMINGS[consumer] = Timings(HANDLER_BUCKETS)
    return timings


def layer_timings(operation: str) -> Timings:
    """The timings of one layer operation (``send``, ``group_send``, ``receive``)."""
    timings = LAYER_TIMINGS.get(operation)
    if timings is None:
        timings = LAYER_TIMINGS[operation] = Timings(LAYER_BUCKETS)
    return timings


def record_handshake(result: str, reason: str = "") -> None:
    """Count one WebSocket handshake: ``accepted``, ``refused`` (with a reason) or ``timed_out``.

    Reasons in use: ``bad_request`` (not a valid upgrade), ``no_route`` (404),
    ``origin`` (403), ``consumer`` (the consumer refused), ``consumer_error``
    (it raised), ``server_error``, ``shutting_down``; other code may add its own.
    """
    STATS.handshakes[(result, reason)] += 1


def record_history_lookup(hit: bool) -> None:
    """Count one history lookup made outside the layer as a ``hit`` or a ``miss``.

    The layers' own recoveries are counted already (``recovered``,
    ``not_recovered``, ``recovery_dropped_full``, from ``layer.history_counters``).
    """
    STATS.history["hit" if hit else "miss"] += 1


def register_presence_entries(read: Callable[[], float]) -> None:
    """Replace how presence entries are counted (default: what the serving layers track)."""
    _presence[:] = [read]


_INSTRUMENTED = "_wsbridge_metrics_timed"
#: The layers this process serves with (presence entries and history counters come from them).
_serving_layers: weakref.WeakSet[Any] = weakref.WeakSet()


def layer_history_counts() -> dict[str, int]:
    """History recoveries by result (``recovered``, ``not_recovered``...) over serving layers."""
    total: Counter[str] = Counter(STATS.history)
    for layer in list(_serving_layers):
        total.update(getattr(layer, "history_counters", None) or {})
    return dict(total)


def presence_entries() -> int:
    """Presence entries this process tracks: the registered hook's, else the layers' own."""
    if _presence:
        return int(_presence[0]())
    return sum(
        len(groups)
        for layer in list(_serving_layers)
        for groups in (getattr(layer, "_tracked", None) or {}).values()
    )


def instrument_layer(layer: Any) -> None:
    """Time the :data:`LAYER_OPERATIONS` of this layer instance (once).

    Only the instance's attributes change (the class and other layers keep
    their untimed methods), so a process without metrics pays nothing.
    """
    if getattr(layer, _INSTRUMENTED, False):
        return
    _serving_layers.add(layer)
    for operation in LAYER_OPERATIONS:
        method = getattr(layer, operation, None)
        if method is not None:
            setattr(layer, operation, _timed(operation, method))
    setattr(layer, _INSTRUMENTED, True)


def _timed(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    from functools import wraps
    from time import perf_counter

    timings = layer_timings(operation)

    @wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            timings.observe(perf_counter() - started)

    return timed


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` (gunicorn multi-process mode), or None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def connection_states() -> list[tuple[str, str, int]]:
    """(transport, state, count) for this process's open connections."""
    from .transport.websocket import active_connections

    counts: Counter[tuple[str, str]] = Counter()
    for transport in active_connections():
        state = transport.protocol.state.name.lower()
        counts[("websocket", state)] += 1
    longpoll = longpoll_sessions()
    if longpoll:
        counts[("longpoll", "open")] += longpoll
    sse = sse_streams()
    if sse:
        counts[("sse", "open")] += sse
    return [(t, s, n) for (t, s), n in sorted(counts.items())]


def mailbox_depths() -> list[int]:
    """Messages waiting in each open WebSocket connection's mailbox."""
    from .transport.websocket import active_connections

    depths = []
    for transport in active_connections():
        conn = transport.conn
        if conn is not None:
            depths.append(len(conn._mailbox))
    return depths


#: Open long-poll session counters and SSE streams, registered by those transports.
_longpoll_sources: list[Callable[[], int]] = []
_sse_open = [0]


def register_longpoll_sessions(read: Callable[[], int]) -> None:
    """The long-poll transport registers ``read()`` -> its open sessions."""
    if read not in _longpoll_sources:
        _longpoll_sources.append(read)


def longpoll_sessions() -> int:
    total = 0
    for read in list(_longpoll_sources):
        try:
            total += read()
        except Exception:
            logger.debug("long-poll session count failed", exc_info=True)
    return total


def sse_stream_opened() -> None:
    _sse_open[0] += 1


def sse_stream_closed() -> None:
    _sse_open[0] -= 1


def sse_streams() -> int:
    return max(0, _sse_open[0])


_exporter: Exporter | None = None
_exporter_lock = threading.Lock()
_flusher: Any = None
_flusher_pid = 0


def enable() -> None:
    """Turn metrics on in this process (idempotent): handlers and layer calls are timed.

    Raises:
        ConfigurationError: prometheus_client is missing (names the extra).
    """
    global _exporter, _enabled
    with _exporter_lock:
        if _exporter is None:
            from .metrics_exporter import Exporter

            _exporter = Exporter()
        _enabled = True
    start_flusher()


def start_flusher() -> None:
    """Multi-process mode: flush this process's counts every second (once per process).

    Called by :func:`enable` and again when a process starts serving, so a
    worker forked from a master that enabled metrics (gunicorn ``--preload``)
    runs its own flusher.
    """
    global _flusher, _flusher_pid
    if not _enabled or not multiprocess_dir():
        return
    if _flusher is not None and _flusher_pid == os.getpid() and not _flusher.dead:
        return
    import gevent

    _flusher, _flusher_pid = gevent.spawn(_flush_forever), os.getpid()


def _flush_forever() -> None:
    import gevent

    while True:
        gevent.sleep(FLUSH_INTERVAL)
        try:
            flush()
        except Exception:
            logger.exception("flushing metrics failed")


def flush() -> None:
    """Copy this process's counts into its prometheus_client metrics."""
    if _exporter is not None:
        _exporter.flush()


def render() -> tuple[bytes, str]:
    """The exposition text (all workers' in multi-process mode) and its content type."""
    enable()
    exporter = _exporter
    assert exporter is not None
    exporter.flush()
    prom = exporter.prom
    if multiprocess_dir():
        from .metrics_exporter import multiprocess

        registry = prom.CollectorRegistry()
        multiprocess().MultiProcessCollector(registry)
    else:
        registry = exporter.registry
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST


def _authorized(environ: dict[str, Any], token: str | None) -> bool:
    if not token:
        return True
    import hmac

    header = environ.get("HTTP_AUTHORIZATION", "")
    return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def metrics_app(token: str | None = None) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering GET with the exposition text.

    Args:
        token: when given, requests need ``Authorization: Bearer <token>``
            (401 otherwise). Without it, protect the path another way (the
            proxy, a private listener): it tells anyone who asks how busy you are.
    """
    enable()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"GET only\n"]
        if not _authorized(environ, token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"metrics need Authorization: Bearer <token>\n"]
        body, content_type = render()
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []

    return app


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """Gunicorn ``child_exit`` hook: forget a dead worker's live gauges (multi-process mode)."""
    if multiprocess_dir():
        from .metrics_exporter import multiprocess

        multiprocess().mark_process_dead(worker.pid)


def reset() -> None:
    """Forget this process's counts and exporter (tests)."""
    global _exporter, _enabled
    _exporter = None
    _enabled = False
    STATS.__init__()
    HANDLER_TIMINGS.clear()
    LAYER_TIMINGS.clear()
