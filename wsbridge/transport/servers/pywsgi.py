"""gevent's pywsgi: ``wsbridge serve``'s own server, and any other pywsgi handler.

``wsbridge serve`` runs pywsgi with ``WSBridgeHandler``, which lends its
socket to the WebSocket transport: once the WebSocket is over it writes no
response and reads no further request on that socket, and it frees its read
buffer while the WebSocket is open. Another pywsgi handler (gunicorn's
``-k gevent_pywsgi``, a hand-made ``WSGIServer``) lends its socket the same
way; it is found as the owner of the ``start_response`` it passed, which is
its bound method.

This module's imports are patch-safe: ``gevent.pywsgi`` is imported only
inside the functions that need it, so ``wsbridge.cli.main()`` can patch the
standard library before anything imports ``ssl`` or ``threading``.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Callable
from typing import Any

from ..websocket import Handover

__all__ = [
    "handover",
    "handler_class",
    "make_server",
    "serve",
    "run_until_signal",
    "wrap_if_needed",
    "HANDLER_KEY",
]

logger = logging.getLogger("wsbridge.server")

#: The environ key of a weak reference to ``WSBridgeHandler`` (read by the
#: HTTP transport and the limits too, to close the connection after an answer).
HANDLER_KEY = "wsbridge.pywsgi_handler"

#: Something :func:`serve` runs beside the server (``wsbridge.worker``'s
#: embedded worker): built from the wrapped app, stopped with ``stop(timeout=)``.
Background = Callable[[Any], Any]


# -- the socket hand-over -------------------------------------------------------------


def _drain_buffered(handler: Any) -> bytes:
    """Bytes the handler's buffered reader holds past the request head (never blocks)."""
    rfile = getattr(handler, "rfile", None)
    sock = handler.socket
    if rfile is None:
        return b""
    prior = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        return bytes(rfile.read1(65536) or b"")
    except OSError:
        return b""
    finally:
        sock.settimeout(prior)


def _finisher(handler: Any) -> Callable[[int, int], list[bytes]]:
    def finish(status: int, bytes_sent: int) -> list[bytes]:
        # The response went out on the socket already: make pywsgi write
        # nothing more, log the handshake status, and close the connection.
        line = f"{status} {'Switching Protocols' if status == 101 else 'WebSocket'}"
        handler.status = line
        handler._orig_status = line
        handler.code = status
        handler.headers_sent = True
        handler.response_headers = []  # gunicorn's access log iterates them
        handler.response_use_chunked = False
        handler.response_length = bytes_sent
        handler.close_connection = True
        handler.wsbridge_handed_over = True
        return []

    return finish


def handler_handover(handler: Any, server_name: str, *, upgraded: bool = False) -> Handover:
    """The ``Handover`` of one pywsgi handler's socket.

    Also used for gevent-websocket's handler (a pywsgi handler that has
    already answered the handshake: ``upgraded=True``).
    """
    preread = _drain_buffered(handler)
    release = getattr(handler, "wsbridge_release_rfile", None)
    if release is not None:
        release()
    return Handover(
        sock=handler.socket,
        finish=_finisher(handler),
        preread=preread,
        server=server_name,
        upgraded=upgraded,
    )


def _own_handler(environ: dict[str, Any]) -> Any:
    ref = environ.get(HANDLER_KEY)
    return ref() if ref is not None else None


def _foreign_handler(start_response: Any) -> Any:
    pywsgi = sys.modules.get("gevent.pywsgi")
    owner = getattr(start_response, "__self__", None)
    if pywsgi is None or not isinstance(owner, pywsgi.WSGIHandler):
        return None
    return owner


def handover(environ: dict[str, Any], start_response: Any = None) -> Handover | None:
    """Take the socket from the pywsgi handler serving this request; None under another server.

    ``WSBridgeHandler`` leaves a weak reference to itself in the environ;
    any other pywsgi handler is the owner of ``start_response`` (its bound
    method), so a middleware that replaces ``start_response`` outside
    ``wrap()`` hides it: wrap the outermost app instead.
    """
    handler = _own_handler(environ)
    name = "wsbridge"
    if handler is None:
        handler = _foreign_handler(start_response)
        name = type(handler).__name__
    if handler is None or getattr(handler, "socket", None) is None:
        return None
    return handler_handover(handler, name)


# -- the handler -----------------------------------------------------------------------


class _ClosedFile:
    """Stands in for a released buffered reader: closed, empty."""

    closed = True

    def close(self) -> None:
        pass

    def read(self, *args: Any) -> bytes:
        return b""

    readline = read1 = read


_CLOSED_FILE = _ClosedFile()

#: ``wsbridge serve``'s pywsgi handler class, built by :func:`handler_class` (pywsgi is
#: imported only when serving).
WSBridgeHandler: type | None = None


def handler_class() -> type:
    """Build ``WSBridgeHandler`` once (pywsgi is imported only when serving)."""
    global WSBridgeHandler
    if WSBridgeHandler is not None:
        return WSBridgeHandler
    from gevent import pywsgi

    from .pywsgi_limits import LimitsHandlerMixin

    # What pywsgi logs to without an access log (a private class: none if it goes).
    no_log: Any = getattr(pywsgi, "_NoopLog", ())

    class _Handler(LimitsHandlerMixin, pywsgi.WSGIHandler):  # type: ignore[misc]
        """pywsgi handler that lends its socket to wsbridge's WebSocket transport.

        :class:`~.pywsgi_limits.LimitsHandlerMixin` bounds the waits on the
        peer (request head, idle keep-alive, unread body) and logs bad
        requests as counted WARNING lines instead of tracebacks.
        """

        wsbridge_handed_over = False

        def get_environ(self) -> dict[str, Any]:
            env = super().get_environ()
            # A weak reference: environ must not keep the handler (and its
            # buffers) alive in a reference cycle.
            env[HANDLER_KEY] = weakref.ref(self)
            return env

        def wsbridge_release_rfile(self) -> None:
            # The WebSocket reads the socket directly: free the 8 KiB buffer
            # of pywsgi's reader now rather than when the connection ends.
            rfile: Any = getattr(self, "rfile")  # noqa: B009 - pywsgi sets it untyped
            self.rfile = _CLOSED_FILE
            if getattr(self, "wsgi_input", None) is not None:
                self.wsgi_input.rfile = _CLOSED_FILE
            if self.environ.get("wsgi.input") is rfile:
                self.environ["wsgi.input"] = _CLOSED_FILE
            rfile.close()

        def run_application(self) -> None:
            self.wsbridge_handed_over = False
            super().run_application()

        def log_request(self) -> None:
            if isinstance(self.server.log, no_log):
                return  # no access log: not even the line to format (a long poll's µs)
            super().log_request()

        def format_request(self) -> str:
            # Connect tokens may ride in the query string: never write them to the log.
            from ...identity import redact

            return redact(super().format_request())

        def process_result(self) -> None:
            if self.wsbridge_handed_over:
                return  # the WebSocket wrote its own bytes; nothing more goes out
            super().process_result()

    _Handler.__name__ = _Handler.__qualname__ = "WSBridgeHandler"
    WSBridgeHandler = _Handler
    return _Handler


# -- serving ---------------------------------------------------------------------------


def wrap_if_needed(app: Any, **options: Any) -> Any:
    """``app`` if :func:`wsbridge.wrap` made it, else ``wrap(app, **options)``."""
    if getattr(app, "wsbridge_wrapped", False):
        return app
    from ..wsgi import wrap

    return wrap(app, **options)


def make_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    access_log: Any = None,
    timeouts: Any = None,
    **wrap_options: Any,
) -> Any:
    """Build (not start) a pywsgi server for ``app``, wrapped with :func:`wsbridge.wrap` if needed.

    Args:
        app: a WSGI app; one returned by ``wrap()`` is used as is.
        host: the address to listen on.
        port: the port (0 picks a free one: read ``server.server_port`` after ``start()``).
        access_log: a file-like object for access lines, or None for none.
        timeouts: a :class:`~wsbridge.transport.limits.ServerTimeouts` (request
            head, idle keep-alive, unread body); None for the defaults.
        wrap_options: passed to ``wrap()`` when ``app`` is not wrapped yet.

    Returns:
        A ``gevent.pywsgi.WSGIServer``; call ``start()`` or ``serve_forever()``.
    """
    from gevent import pywsgi

    from ..limits import ServerTimeouts

    wrapped = wrap_if_needed(app, **wrap_options)
    server = pywsgi.WSGIServer(
        (host, port),
        wrapped,
        handler_class=handler_class(),
        log=access_log,
        error_log=logging.getLogger("wsbridge.server.errors"),
    )
    server.wsbridge_timeouts = timeouts if timeouts is not None else ServerTimeouts()
    return server


def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    access_log: Any = None,
    shutdown_timeout: float = 10.0,
    ready: Callable[[Any], None] | None = None,
    background: Background | None = None,
    **wrap_options: Any,
) -> None:
    """Serve ``app`` on pywsgi until a signal, then close every connection and return.

    SIGTERM/SIGINT close WebSockets with 1001, SIGHUP with 1012
    (:func:`~wsbridge.transport.shutdown.shutdown`). ``background(app)`` runs
    beside the server and is stopped after it (``wsbridge serve`` passes the
    embedded worker: :func:`wsbridge.cli.serve`).

    Raises:
        ConfigurationError: gevent has not patched the standard library.
    """
    from . import check_monkey_patched, check_startup

    check_monkey_patched()
    server = make_server(app, host, port, access_log=access_log, **wrap_options)
    check_startup(server.application)
    server.start()
    companion = background(server.application) if background is not None else None
    logger.info("wsbridge serving on http://%s:%d/ (pid %d)", host, server.server_port, os.getpid())
    from ...layers import channel_layer_source

    logger.info(
        "channel layer: %r (from %s)", server.application.layer, channel_layer_source() or "?"
    )
    if ready is not None:
        ready(server)
    try:
        run_until_signal(server, shutdown_timeout)
    finally:
        if companion is not None and hasattr(companion, "stop"):
            companion.stop(timeout=shutdown_timeout)


def run_until_signal(server: Any, shutdown_timeout: float) -> None:
    """Wait for SIGTERM/SIGINT (1001) or SIGHUP (1012), stop accepting, close, return.

    Long-poll sessions move to the other processes (shared layer), or get the
    code too; open WebSockets get ``shutdown_timeout`` seconds to close.
    """
    from ..shutdown import SERVICE_RESTART, shutdown, wait_for_signal

    code = wait_for_signal()
    server.close()  # stop accepting
    reason = "service restart" if code == SERVICE_RESTART else "server shutting down"
    shutdown(
        code,
        reason,
        apps=[server.application],
        longpoll_timeout=min(shutdown_timeout, 5.0),
        drain=shutdown_timeout,
    )
    server.stop(timeout=1)
