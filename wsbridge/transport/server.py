"""Serve a WSGI app on gevent's pywsgi, WebSockets included: ``serve()`` and ``wsbridge serve``.

``wsbridge serve mysite.wsgi`` (or ``module:attr``) imports the app after
gevent has monkey-patched the standard library: the patching happens in
``wsbridge.cli.main()`` before any subcommand module is imported (an
imported module could otherwise pull in ``ssl`` or ``threading`` first).
This module's own imports are patch-safe for that reason: ``gevent.pywsgi``
is imported only inside the functions that need it.

``WSBridgeHandler`` is the pywsgi handler that lends its socket to the
WebSocket transport: once the WebSocket is over it writes no response and
reads no further request on that socket.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
import weakref
from typing import Any

from ..exceptions import ConfigurationError

__all__ = [
    "serve",
    "make_server",
    "load_app",
    "add_serve_arguments",
    "run_serve",
    "wsbridge_handover",
    "foreign_pywsgi_handover",
    "handler_class",
    "tune_gc",
    "GC_THRESHOLDS",
]

logger = logging.getLogger("wsbridge.server")

_HANDLER_KEY = "wsbridge.pywsgi_handler"


# -- the socket hand-over from a pywsgi handler ---------------------------------------


def _drain_buffered(handler: Any) -> bytes:
    """Bytes the handler's buffered reader holds past the request head (never blocks)."""
    rfile = getattr(handler, "rfile", None)
    sock = handler.socket
    if rfile is None:
        return b""
    prior = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        return rfile.read1(65536) or b""
    except OSError:
        return b""
    finally:
        sock.settimeout(prior)


def _finish_pywsgi(handler: Any) -> Any:
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


def _pywsgi_handover(handler: Any, server_name: str, *, upgraded: bool = False) -> Any:
    from .websocket import Handover

    preread = _drain_buffered(handler)
    release = getattr(handler, "wsbridge_release_rfile", None)
    if release is not None:
        release()
    return Handover(
        sock=handler.socket,
        finish=_finish_pywsgi(handler),
        preread=preread,
        server=server_name,
        upgraded=upgraded,
    )


class _ClosedFile:
    """Stands in for a released buffered reader: closed, empty."""

    closed = True

    def close(self) -> None:
        pass

    def read(self, *args: Any) -> bytes:
        return b""

    readline = read1 = read


_CLOSED_FILE = _ClosedFile()


def wsbridge_handover(environ: dict[str, Any]) -> Any:
    """The hand-over from ``WSBridgeHandler``, or None under another server."""
    ref = environ.get(_HANDLER_KEY)
    handler = ref() if ref is not None else None
    if handler is None or getattr(handler, "socket", None) is None:
        return None
    return _pywsgi_handover(handler, "wsbridge")


def foreign_pywsgi_handover(environ: dict[str, Any]) -> Any:
    """Find the gevent pywsgi handler serving this request (gunicorn -k gevent_pywsgi,
    a hand-made ``WSGIServer``) by walking up the stack; None if there is none.
    """
    pywsgi = sys.modules.get("gevent.pywsgi")
    if pywsgi is None:
        return None
    frame: Any = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, pywsgi.WSGIHandler) and candidate.environ is environ:
            return _pywsgi_handover(candidate, type(candidate).__name__)
        frame = frame.f_back
    return None


def handler_class() -> type:
    """Build ``WSBridgeHandler`` (pywsgi is imported only when serving)."""
    global WSBridgeHandler
    if WSBridgeHandler is not None:
        return WSBridgeHandler
    from gevent import pywsgi

    from .pywsgi_limits import LimitsHandlerMixin

    class _Handler(LimitsHandlerMixin, pywsgi.WSGIHandler):
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
            env[_HANDLER_KEY] = weakref.ref(self)
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

        def format_request(self) -> str:
            # Connect tokens may ride in the query string: never write them to the log.
            from ..identity import redact

            return redact(super().format_request())

        def process_result(self) -> None:
            if self.wsbridge_handed_over:
                return  # the WebSocket wrote its own bytes; nothing more goes out
            super().process_result()

    _Handler.__name__ = _Handler.__qualname__ = "WSBridgeHandler"
    WSBridgeHandler = _Handler
    return _Handler


WSBridgeHandler: Any = None


# -- serving -------------------------------------------------------------------------------


def _ensure_wrapped(app: Any, router: Any = None, **options: Any) -> Any:
    if getattr(app, "wsbridge_wrapped", False):
        return app
    from .wsgi import wrap

    return wrap(app, router=router, **options)


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
        host, port: where to listen (port 0 picks a free port: read
            ``server.server_port`` after ``start()``).
        access_log: a file-like object for access lines, or None for none.
        timeouts: a :class:`~wsbridge.transport.limits.ServerTimeouts` (request
            head, idle keep-alive, unread body); None for the defaults.
        wrap_options: passed to ``wrap()`` when ``app`` is not wrapped yet.

    Returns:
        A ``gevent.pywsgi.WSGIServer``; call ``start()`` or ``serve_forever()``.
    """
    from gevent import pywsgi

    from .limits import ServerTimeouts

    wrapped = _ensure_wrapped(app, **wrap_options)
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
    ready: Any = None,
    embedded_worker: bool = True,
    **wrap_options: Any,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (close WebSockets with 1001) or SIGHUP (1012), then
    return (:mod:`wsbridge.transport.shutdown`).

    Long-poll sessions are handed over to the other processes when the
    layer is shared (they survive the restart), else closed with 1001 too.
    Background channels run in this process too, unless ``embedded_worker``
    is False (``--no-worker``: separate ``wsbridge worker`` processes run them).

    Requires gevent monkey-patching (``wsbridge serve`` does it for you).

    Raises:
        ConfigurationError: gevent has not patched the standard library.
    """
    from .wsgi import check_monkey_patched

    check_monkey_patched()
    server = make_server(app, host, port, access_log=access_log, **wrap_options)
    from .wsgi import check_startup

    check_startup(server.application)
    server.start()
    worker = _start_embedded_worker(server.application) if embedded_worker else None
    logger.info("wsbridge serving on http://%s:%d/ (pid %d)", host, server.server_port, os.getpid())
    from ..layers import channel_layer_source

    logger.info(
        "channel layer: %r (from %s)", server.application.layer, channel_layer_source() or "?"
    )
    if ready is not None:
        ready(server)
    try:
        _run_until_signal(server, shutdown_timeout)
    finally:
        if worker is not None and hasattr(worker, "stop"):
            worker.stop(timeout=shutdown_timeout)


def _start_embedded_worker(app: Any) -> Any:
    # Background channels run in-process by default (wsbridge.worker, if present).
    try:
        worker = importlib.import_module("wsbridge.worker")
    except ModuleNotFoundError as exc:
        if exc.name != "wsbridge.worker":
            raise
        return None
    start = getattr(worker, "start_embedded", None)
    return start(app.layer, app.router) if callable(start) else None


def _run_until_signal(server: Any, shutdown_timeout: float) -> None:
    """SIGTERM/SIGINT: close with 1001 and return; SIGHUP: close with 1012 (service
    restart: clients reconnect at once, to this process started again) and return."""
    import gevent

    from .shutdown import SERVICE_RESTART, close_connections, wait_for_signal
    from .websocket import active_connections

    code = wait_for_signal()
    server.close()  # stop accepting
    reason = "service restart" if code == SERVICE_RESTART else "server shutting down"
    # Long-poll sessions move to the other processes (shared layer), or get the code too.
    close_connections(
        code, reason, apps=[server.application], longpoll_timeout=min(shutdown_timeout, 5.0)
    )
    with gevent.Timeout(shutdown_timeout, False):
        while active_connections():
            gevent.sleep(0.05)
    server.stop(timeout=1)


# -- the command --------------------------------------------------------------------------


def cwd_on_path() -> None:
    """Put the cwd on ``sys.path``, as ``python -m`` does and console scripts do not.

    Call it before importing the project's modules (the app, ``--consumers``,
    ``--routing``), so that ``wsbridge serve`` finds them where it is started.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_app(spec: str) -> Any:
    """Import the WSGI app named by ``module:attr`` or ``module``.

    Without ``:attr`` the module's ``application`` is used, else its ``app``.

    Raises:
        ConfigurationError: the module or the attribute does not exist.
    """
    module_name, _, attr = spec.partition(":")
    cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for name in [attr] if attr else ["application", "app"]:
        app = getattr(module, name, None)
        if app is not None:
            if not callable(app):
                raise ConfigurationError(f"{module_name}:{name} is not a WSGI callable")
            return app
    wanted = attr or "application (or app)"
    raise ConfigurationError(f"{module_name} has no attribute {wanted}")


# -- garbage collection tuned for a server ------------------------------------------

#: What ``wsbridge serve`` sets with :func:`tune_gc` (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 50, 100)
_CPYTHON_DEFAULT_THRESHOLDS = (700, 10, 10)


def tune_gc(enabled: bool | None = None) -> bool:
    """Collect cyclic garbage less often in a server; call it once the app is loaded.

    Every delivered message allocates a few container objects (the event
    dict, the frame), and with thousands of connections alive CPython's
    default of a young collection every 700 net allocations comes every few
    hundred deliveries. This freezes what is loaded so far (the app, Django,
    the modules: ``gc.freeze()``, after one last full collection, so no
    garbage is frozen) and sets :data:`GC_THRESHOLDS`. Cycles made later
    are still collected, in fewer, bigger passes.

    It is off unless asked for: since the mailbox pump landed it measured
    neutral on the fan-out and echo benchmarks (docs/topics/performance.rst),
    and a server should not change an app's collector for no measured gain.

    Args:
        enabled: True to tune, False to leave the collector alone; None reads
            ``WSBRIDGE_GC_TUNING`` (``1``, ``yes`` or ``on`` enable it).

    Returns:
        True if it tuned; False when disabled, or when the app already set
        its own thresholds or disabled the collector (its choice is kept).
    """
    if enabled is None:
        enabled = os.environ.get("WSBRIDGE_GC_TUNING", "0").strip().lower() in (
            "1",
            "yes",
            "on",
            "true",
        )
    if not enabled:
        return False
    if not gc.isenabled() or gc.get_threshold() != _CPYTHON_DEFAULT_THRESHOLDS:
        logger.debug("garbage collector already configured by the app: left as is")
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return True


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``wsbridge serve``."""
    parser.add_argument(
        "app", help="the WSGI app: module:attr, or module (uses `application`, then `app`)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default 8000, 0 = any)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--access-log", metavar="FILE", help="write access lines to FILE ('-' = stdout)"
    )
    parser.add_argument(
        "--routing",
        default=None,
        metavar="DOTTED",
        help="a routing module (router / routes list) or module:name, as for `wsbridge worker`",
    )
    parser.add_argument(
        "--consumers",
        action="append",
        default=[],
        metavar="MODULES",
        help="consumer modules to import first (their decorators register routes); "
        "comma-separated, repeatable",
    )
    parser.add_argument(
        "--layer",
        action="append",
        metavar="URL",
        help="the process's channel layer: 'memory', a redis:// URL (?prefix=...; "
        "repeat once per shard) or module:attr, as for `wsbridge worker`. Order of "
        "precedence: wrap(app, layer=...) in the app, then --layer, then $WSBRIDGE_LAYER, "
        "then the app's settings, then in-memory",
    )
    parser.add_argument(
        "--no-worker",
        dest="embedded_worker",
        action="store_false",
        help="do not run background channels in this process (`wsbridge worker` runs them)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds a client has to send a request line and headers (408 after; default 10)",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds an idle keep-alive connection is kept (default 30)",
    )
    gc_switch = parser.add_mutually_exclusive_group()
    gc_switch.add_argument(
        "--gc-tuning",
        dest="gc_tuning",
        action="store_true",
        default=None,
        help="gc.freeze() once the app is loaded and a generation-0 threshold of 50,000 "
        "(off by default; WSBRIDGE_GC_TUNING=1 does the same)",
    )
    gc_switch.add_argument(
        "--no-gc-tuning",
        dest="gc_tuning",
        action="store_false",
        help="keep CPython's garbage collector settings (the default)",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def run_serve(args: argparse.Namespace) -> int:
    """Run ``wsbridge serve``; returns the exit status."""
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        print(
            "wsbridge serve: gevent monkey-patching is missing; start it with the `wsbridge` "
            "command or `python -m wsbridge`, which patch before importing the app",
            file=sys.stderr,
        )
        return 2
    from ..consumers.loading import build_router
    from ..consumers.routing import router as default_router
    from ..exceptions import WSBridgeError

    try:
        cwd_on_path()  # --layer module:attr, --consumers and --routing name project modules too
        _install_command_layer(args.layer)  # before the app is imported: it may use it
        consumers = [m.strip() for v in args.consumers for m in v.split(",") if m.strip()]
        router = build_router(args.routing, consumers)
        app = load_app(args.app)
    except (WSBridgeError, ImportError) as exc:
        print(f"wsbridge serve: {exc}", file=sys.stderr)
        return 2
    if getattr(app, "wsbridge_wrapped", False):
        if getattr(app, "router", None) is default_router:
            app.router = router  # --routing / --consumers complete the default routes
    else:
        app = _ensure_wrapped(app, router=router)
    tune_gc(getattr(args, "gc_tuning", None))  # the app is loaded: freeze it
    access_log = None
    if args.access_log == "-":
        access_log = sys.stdout
    elif args.access_log:
        access_log = open(args.access_log, "a", buffering=1)  # noqa: SIM115 - lives as long as the server
    from .limits import ServerTimeouts

    timeouts = ServerTimeouts(
        header_timeout=getattr(args, "header_timeout", 10.0),
        keepalive_timeout=getattr(args, "keepalive_timeout", 30.0),
    )
    serve(
        app,
        args.host,
        args.port,
        access_log=access_log,
        ready=_print_ready,
        embedded_worker=args.embedded_worker,
        timeouts=timeouts,
    )
    return 0


def _install_command_layer(urls: list[str] | None) -> None:
    """``--layer`` (the ``serve`` source), else ``WSBRIDGE_LAYER`` (``env``), built now so
    a bad value stops the start; settings a Django site loads later do not replace it."""
    from ..layers import install_channel_layer
    from ..layers.urls import LAYER_ENV, layer_from_urls

    if urls:
        install_channel_layer(layer_from_urls(urls), "serve")
    elif os.environ.get(LAYER_ENV, "").strip():
        install_channel_layer(layer_from_urls(os.environ[LAYER_ENV], what=LAYER_ENV), "env")


def _print_ready(server: Any) -> None:
    # One parseable line on stdout: tests and scripts wait for it.
    print(f"wsbridge: listening on http://{server.server_host}:{server.server_port}/", flush=True)
