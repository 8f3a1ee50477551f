"""Per-URL HTTP consumers on gevent: held responses, streaming, Server-Sent Events.

:func:`serve_http` runs inside the WSGI request's own greenlet. It reads the
body (with a limit, while reading), hands it to a
:class:`~wsbridge.consumers.runner.Connection`, then waits for the
consumer's ``http.response.*`` events and writes them through the WSGI
``write`` callable (chunked when the consumer gave no Content-Length) until
the response is complete, the client goes away, or the hold timeout answers
for a consumer that never did.

Costs per held request: the server's request greenlet (parked on one
Event), the socket, a :class:`~wsbridge.consumers.runner.Connection`; no
extra greenlet. A gone client is noticed while holding by an I/O watcher on
the socket (EOF), and while streaming by a failed write
(``keepalive_interval`` makes those writes happen on idle streams).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from http import HTTPStatus
from typing import Any

import gevent
from gevent import Timeout
from gevent.event import Event

from .. import admission, drops
from ..admission import client_ip
from ..consumers.runner import Connection
from ..exceptions import HTTPError
from ..identity import authenticate_scope
from ..layers.base import BaseChannelLayer
from ..logs import CONNECTION_ID
from ..protocol.connection import Crash, refusal_for
from .http_request import SOCKET_KEYS, client_socket, read_body
from .limits import close_after_response, refused
from .scope import build_scope, request_path

__all__ = [
    "HttpOptions",
    "serve_http",
    "dispatcher",
    "read_body",
    "status_line",
    "client_socket",
    "SOCKET_KEYS",
]

logger = logging.getLogger("wsbridge.transport.http")

StartResponse = Callable[..., Callable[[bytes], Any]]


# Hop-by-hop headers a WSGI app must not set (PEP 3333); the server frames the body itself.
_HOP_BY_HOP = frozenset(
    (
        b"transfer-encoding",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    )
)


@dataclass(frozen=True)
class HttpOptions:
    """Limits for HTTP consumers (``wrap(app, http_<name>=...)`` sets them).

    Attributes:
        max_body_size: bytes accepted in a request body; 413 beyond, found
            out while reading (a consumer's ``max_body_size`` overrides it).
        hold_timeout: seconds a request waits for the consumer to start its
            response before ``timeout_status`` answers; 0 waits forever.
        timeout_status: the status of that answer.
        body_timeout: seconds allowed to receive the whole body (408 after).
        write_timeout: seconds one write may block on a client that does
            not read; the client is then treated as gone.
        max_pending: body bytes the consumer may queue ahead of the socket;
            beyond it the response is aborted (a slow client never grows
            memory without bound).
        grace: seconds the consumer gets to finish after the exchange ended
            before its greenlet is killed.
        scope_hook: called with ``(environ, scope)`` to add keys (Django's
            ``session`` and ``user``) before the consumer is built.
    """

    max_body_size: int = 1 << 20
    hold_timeout: float = 60.0
    timeout_status: int = 504
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    max_pending: int = 1 << 20
    grace: float = 5.0
    scope_hook: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    @classmethod
    def coerce(cls, options: Any) -> HttpOptions:
        """Build options from None, an HttpOptions, a mapping or any object with attributes.

        Keys may be spelled ``hold_timeout`` or ``http_hold_timeout``; other keys are ignored.
        """
        if isinstance(options, HttpOptions):
            return options
        if options is None:
            return cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            for key in (f"http_{f.name}", f.name):
                if isinstance(options, Mapping):
                    found = options.get(key)
                else:
                    found = getattr(options, key, None)
                if found is not None:
                    values[f.name] = found
                    break
        if isinstance(options, Mapping):
            nested = options.get("http")
        else:
            nested = getattr(options, "http", None)
        if isinstance(nested, HttpOptions):
            return replace(nested, **values)
        return cls(**values)


def status_line(status: int) -> str:
    """``"404 Not Found"``; an unknown code gets a generic phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Client Closed Request" if status == 499 else "Unknown"
    return f"{status} {phrase}"


def _plain(
    start_response: StartResponse, status: int, text: str, *, close: bool = False
) -> list[bytes]:
    body = (text.rstrip("\n") + "\n").encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    start_response(status_line(status), headers)
    return [body]


# -- one exchange -------------------------------------------------------------------


def serve_http(
    environ: dict[str, Any],
    start_response: StartResponse,
    match: Any,
    layer: BaseChannelLayer | None,
    options: Any = None,
) -> Iterable[bytes]:
    """Serve one request with the HTTP consumer ``match.consumer``; return the WSGI iterable.

    Call it from the WSGI app (``wrap`` does) for a path that
    ``router.resolve("http", path)`` matched. It returns when the exchange is
    over; the body has been written through ``start_response``'s ``write``.
    """
    opts = HttpOptions.coerce(options)
    consumer_class = match.consumer
    limit = _class_attr(consumer_class, "max_body_size") or opts.max_body_size
    try:
        body = read_body(environ, limit, opts.body_timeout)
    except HTTPError as exc:
        # Read no more of a refused body and end the connection (pywsgi would drain
        # it, gunicorn too before its next request): a refused 10 GB upload costs nothing.
        close_after_response(environ, start_response)
        return _plain(start_response, exc.status, exc.reason, close=True)
    scope = build_scope(environ, "http", transport="http")
    scope["url_route"] = match.url_route
    refused = authenticate_scope(scope, environ.get("wsbridge.identity"))
    if refused is not None:
        return _plain(start_response, 403, f"Connect token refused: {refused}.")
    ip = client_ip(scope)
    busy = admission.current().admit(ip, "http")
    if busy is not None:
        return _plain(start_response, 429, f"{busy}; retry later.")
    try:
        try:
            if opts.scope_hook is not None:
                opts.scope_hook(environ, scope)
            exchange = _Exchange(environ, start_response, scope, consumer_class, layer, opts)
        except Exception:
            logger.exception(
                "building HTTP consumer %r for %s failed", consumer_class, scope["path"]
            )
            return _plain(start_response, 500, "Internal Server Error")
        return exchange.run(body)
    finally:
        admission.current().release(ip)


def dispatcher(bridge: Any) -> Callable[[dict[str, Any]], Any]:
    """The HTTP consumer hook of :class:`~wsbridge.transport.wsgi.WSBridgeApp`.

    Returns ``find(environ)``: a WSGI app serving the request with the
    consumer ``bridge.router`` routes at its path, or None to let the
    wrapped app have it. Options come from ``bridge.http`` (an
    :class:`HttpOptions` or a mapping), read per request.
    """

    cache: list[Any] = [None, None]  # (bridge.http as set, its HttpOptions)

    def options() -> HttpOptions:
        raw = getattr(bridge, "http", None)
        if cache[1] is None or cache[0] is not raw:
            cache[:] = [raw, HttpOptions.coerce(raw)]
        coerced: HttpOptions = cache[1]
        return coerced

    def find(environ: dict[str, Any]) -> Any:
        match = bridge.router.resolve("http", request_path(environ))
        if match is None:
            return None

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            environ["wsbridge.identity"] = getattr(bridge, "identity", None)
            return serve_http(environ, start_response, match, bridge.layer, options())

        return app

    return find


def _class_attr(consumer_class: Any, name: str) -> Any:
    # A wrapper around the class (the Django router's) keeps it as ``consumer_class``.
    value = getattr(consumer_class, name, None)
    if value is None and hasattr(consumer_class, "consumer_class"):
        value = getattr(consumer_class.consumer_class, name, None)
    return value


class _Exchange:
    """The request greenlet's side of one HTTP consumer: waits, writes, cleans up."""

    def __init__(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        scope: dict[str, Any],
        consumer_class: Any,
        layer: BaseChannelLayer | None,
        opts: HttpOptions,
    ) -> None:
        self.environ = environ
        self.start_response = start_response
        self.opts = opts
        self.sock = client_socket(environ)
        self.outbox: deque[dict[str, Any]] = deque()
        self.pending = 0
        self.wakeup = Event()
        self.drained = Event()
        self.write: Callable[[bytes], Any] | None = None
        self.started = False
        self.complete = False
        self.gone = False
        self.abort_stream = False
        self.last_write = time.monotonic()
        self.writing = False  # a write is under way (in either greenlet)
        # A server that shows the client's socket writes to it from any greenlet, so a
        # streamed piece can go out from the consumer's greenlet (uWSGI's write belongs
        # to the request's greenlet: there every piece goes through the request's loop).
        self.direct = self.sock is not None
        self._timer: Timeout | None = None  # the write timeout, armed for each write
        self._watcher: Any = None
        self.conn = Connection(scope, consumer_class, layer, self._on_event)
        consumer = self.conn.consumer
        hold = getattr(consumer, "hold_timeout", None)
        self.hold_timeout = opts.hold_timeout if hold is None else hold
        status = getattr(consumer, "timeout_status", None)
        self.timeout_status = opts.timeout_status if status is None else status
        self.keepalive = getattr(consumer, "keepalive_interval", None)
        self.keepalive_body = getattr(consumer, "keepalive_body", b"") or b""

    # -- called in the consumer's mailbox greenlet --------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        body = event.get("body")
        if self.complete or self.gone:
            # The exchange is over: a late piece is lost, as on a closed socket.
            if body:
                drops.record_drop("connection_closed", detail=str(self.conn.scope.get("path")))
            return
        if body and self.direct and self.started and not self.outbox and not self.writing:
            if event.get("more_body") and event.get("type") == "http.response.body":
                # Streaming with nothing queued: write the piece from here, sparing
                # the request greenlet a wake-up and a switch per piece.
                self._send(body)
                if self.gone:
                    self.wakeup.set()  # the request greenlet concludes
                return
        self.outbox.append(event)
        self.wakeup.set()
        if event.get("type") == "http.response.body" and not event.get("more_body"):
            # The answer is complete: queue the consumer's end now, behind the
            # handler that answered, so its mailbox greenlet runs it without
            # being spawned again (the transport still writes the answer).
            self.conn.disconnected(0)
        if body:
            self.pending += len(body)
            if self.pending > self.opts.max_pending:
                self._wait_for_client()

    def _wait_for_client(self) -> None:
        # Backpressure: a consumer streaming faster than its client reads
        # waits here (in its own greenlet) for the writer to catch up, so at
        # most max_pending bytes plus one piece wait in memory. A client that
        # does not catch up within write_timeout is dropped.
        self.drained.clear()
        in_hub = gevent.getcurrent() is gevent.get_hub()
        if not in_hub and self.drained.wait(self.opts.write_timeout):
            return
        if self.complete or self.gone:
            return
        refused(
            "http_slow_reader",
            f"client of {self.conn.scope.get('path')} reads too slowly "
            f"({self.pending} bytes waiting); response aborted",
            log=logger,
        )
        self.gone = self.abort_stream = True
        self.wakeup.set()

    # -- the request greenlet ----------------------------------------------------

    def run(self, body: bytes) -> Iterable[bytes]:
        conn = self.conn
        conn.finished.rawlink(self._wake)
        self._watch_client()
        context = CONNECTION_ID.set(conn.connection_id)  # on this request's log records
        try:
            conn.push({"type": "http.request", "body": body, "more_body": False})
            self._loop()
            return self._conclude()
        finally:
            CONNECTION_ID.reset(context)
            self._unwatch_client()
            conn.finished.unlink(self._wake)
            self.drained.set()  # a consumer waiting for the client must not wait any more
            self._release()
            if self._timer is not None and not self.writing:
                self._timer.close()

    def _wake(self, _: Any = None) -> None:
        self.wakeup.set()

    def _loop(self) -> None:
        deadline = time.monotonic() + self.hold_timeout if self.hold_timeout else None
        while True:
            self.wakeup.clear()
            self._flush()
            if self.complete or self.gone or self.conn.finished.is_set():
                return
            now = time.monotonic()
            if not self.started:
                if deadline is not None and now >= deadline:
                    self._answer_timeout()
                    return
                wait = None if deadline is None else deadline - now
            elif self.keepalive:
                due = self.last_write + self.keepalive
                if now >= due and not self.writing:
                    self._send(self.keepalive_body)
                    continue
                wait = due - now if now < due else self.keepalive  # a write is under way
            else:
                wait = None
            self.wakeup.wait(wait)

    def _flush(self) -> None:
        outbox = self.outbox
        # Not while the consumer's greenlet writes a piece: its _send wakes us after.
        while outbox and not (self.complete or self.gone or self.writing):
            event = outbox.popleft()
            kind = event.get("type")
            try:
                if kind == "http.response.start":
                    body_follows = bool(outbox) and outbox[0].get("type") == "http.response.body"
                    self._start(event, flush=not body_follows)
                elif kind == "http.response.body":
                    self._body(event)
                else:
                    logger.warning("HTTP consumer sent %r; only http.response.* goes out", kind)
            except Exception:
                path = self.conn.scope.get("path")
                logger.exception("bad response from the consumer for %s", path)
                self._fail()

    def _start(self, event: dict[str, Any], *, flush: bool) -> None:
        if self.started:
            raise RuntimeError("a second http.response.start for one request")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in event.get("headers", ())
            if name.lower() not in _HOP_BY_HOP
        ]
        self.write = self.start_response(status_line(int(event["status"])), headers)
        self.started = True
        if flush:
            self._send(b"")  # headers out now: an EventSource opens on them

    def _body(self, event: dict[str, Any]) -> None:
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        data = event.get("body") or b""
        if data:
            self._send(data)
        self.pending -= len(data)
        if self.pending <= self.opts.max_pending // 2:
            self.drained.set()
        if not event.get("more_body"):
            self.complete = True

    def _send(self, data: bytes) -> None:
        assert self.write is not None
        timer = self._timer
        if timer is None:
            timer = self._timer = Timeout(self.opts.write_timeout)
        timer.start()  # one timer per exchange, restarted for each write
        self.writing = True
        try:
            self.write(data)
            self.last_write = time.monotonic()
        except Timeout as exc:
            if exc is not timer:
                raise
            refused(
                "http_write_timeout",
                f"client of {self.conn.scope.get('path')} read nothing for "
                f"{self.opts.write_timeout:.1f} s; dropped",
                log=logger,
            )
            self.gone = self.abort_stream = True
        except OSError:
            self.gone = True
        finally:
            timer.cancel()
            self.writing = False
            if self.outbox:
                self.wakeup.set()  # queued behind this write: the request greenlet flushes

    def _answer_timeout(self) -> None:
        status = self.timeout_status
        logger.info(
            "nobody answered %s in %.1f s; answering %d",
            self.conn.scope.get("path"),
            self.hold_timeout,
            status,
        )
        if status in (204, 304) or status < 200:
            body, headers = b"", []
        else:
            body = (status_line(status).partition(" ")[2] + "\n").encode()
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            headers.append(("Content-Length", str(len(body))))
        self.write = self.start_response(status_line(status), headers)
        self.started = True
        self._send(body)
        self.complete = True

    def _fail(self) -> None:
        """The consumer broke the protocol: 500 if nothing went out yet, else cut the stream."""
        if not self.started:
            self.write = self.start_response(
                status_line(500), [("Content-Type", "text/plain"), ("Content-Length", "22")]
            )
            self.started = True
            self._send(b"Internal Server Error\n")
            self.complete = True
        else:
            self.abort_stream = True
            self.gone = True

    def _conclude(self) -> list[bytes]:
        """Decide what the server still writes: nothing more, a 500, or a cut connection.

        The connection contract's rules for an HTTP exchange: a consumer that
        ends (or crashes) before its response started gets the crash answer
        (500); one that crashes while streaming has its stream cut, so the
        body cannot look complete; ``StopConsumer`` while streaming ends it.
        """
        if self.complete and not self.gone:
            return []
        if not self.gone and self.conn.finished.is_set():
            if not self.started:
                if not self.conn.failed:  # a crash was logged by the runner, once
                    logger.warning(
                        "HTTP consumer %s ended without answering %s; answering 500",
                        type(self.conn.consumer).__name__,
                        self.conn.scope.get("path"),
                    )
                # Unanswered, crashed or not: the contract's answer to a crash (500).
                status = refusal_for(Crash()).status
                return _plain(self.start_response, status, "Internal Server Error")
            if not self.conn.failed:
                return []  # StopConsumer while streaming: end the body cleanly
            self.abort_stream = True
        # The client is gone, or the body must not look complete: cut the connection.
        self._shutdown_socket()
        if not self.started:
            self.start_response(status_line(499), [("Connection", "close")])
        return []

    def _shutdown_socket(self) -> None:
        if self.sock is None:
            if self.abort_stream:
                # No socket to cut: raising makes the server drop the connection
                # instead of writing the final chunk of a broken body.
                raise ConnectionAbortedError("response aborted")
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- noticing a gone client while holding --------------------------------------

    def _watch_client(self) -> None:
        if self.sock is None:
            return
        try:
            fd = self.sock.fileno()
        except OSError:
            return
        if fd < 0:
            return
        self._watcher = gevent.get_hub().loop.io(fd, 1)
        self._watcher.start(self._on_readable)

    def _on_readable(self) -> None:
        # Runs in the hub: must not block. The client sends nothing while it
        # waits, so readable means EOF (gone) or data (a pipelined request,
        # which we leave alone: stop watching either way).
        raw: Any = getattr(self.sock, "_sock", self.sock)
        try:
            data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._unwatch_client()
        if not data:
            self.gone = True
            self.wakeup.set()

    def _unwatch_client(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    # -- the end ----------------------------------------------------------------------

    def _release(self) -> None:
        """Let the consumer's ``disconnect()`` run; kill it if it does not finish in time."""
        conn = self.conn
        if conn.finished.is_set():
            return
        conn.disconnected(0)
        if conn.finished.is_set():
            return
        timer = gevent.get_hub().loop.timer(self.opts.grace)

        def give_up() -> None:
            timer.close()
            if not conn.finished.is_set():
                logger.warning(
                    "HTTP consumer %s did not finish %.1f s after its request ended; killing it",
                    type(conn.consumer).__name__,
                    self.opts.grace,
                )
                conn.abort()

        def finished(_: Any) -> None:
            timer.close()

        timer.start(give_up)
        conn.finished.rawlink(finished)
