"""The servers wsbridge runs under, one module per flavour (as gunicorn's workers are).

A WebSocket needs the raw client socket, and each gevent server lends it its
own way. Each module exposes one hand-over function,
``handover(environ, start_response) -> Handover | None``: the socket (and
how to finish the request once the WebSocket is over), or None when this is
not that server.

===================================  ===================================================
:mod:`.pywsgi`                       gevent's pywsgi: ``wsbridge serve`` (its own handler),
                                     ``gunicorn -k gevent_pywsgi``, a hand-made ``WSGIServer``
:mod:`.gunicorn`                     gunicorn's gevent worker (``-k gevent``); its SIGTERM hook
:mod:`.gevent_websocket`             gevent-websocket's gunicorn worker (already said 101)
:mod:`.uwsgi`                        uWSGI with ``--gevent``; its SIGHUP (reload) hook
===================================  ===================================================

:data:`HANDOVERS` lists them in the order :func:`take_over` tries them
(gevent-websocket's handler is a pywsgi handler too, so it goes first). A
new server is a new module here and a line in that tuple. ``wsbridge serve``
itself is :func:`.pywsgi.serve`, with the embedded worker wired in by
:func:`wsbridge.cli.serve`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ...exceptions import ConfigurationError, ServerNotSupported
from ..websocket import Handover
from . import gevent_websocket, gunicorn, pywsgi, uwsgi

__all__ = [
    "HANDOVERS",
    "HandoverFunction",
    "take_over",
    "check_monkey_patched",
    "check_startup",
    "app_created",
    "first_request",
    "SERVER_HINT",
]

logger = logging.getLogger("wsbridge.wsgi")

#: ``handover(environ, start_response)``: this server's socket, or None if it is not this server.
HandoverFunction = Callable[[dict[str, Any], Any], "Handover | None"]

#: Every server's hand-over, in the order they are tried.
HANDOVERS: tuple[HandoverFunction, ...] = (
    gevent_websocket.handover,
    pywsgi.handover,
    gunicorn.handover,
    uwsgi.handover,
)

SERVER_HINT = (
    "run the app with `wsbridge serve module:app`, `gunicorn -k gevent module:app` or "
    "`uwsgi --gevent N --gevent-early-monkey-patch ...` (see docs/topics/deployment.rst)"
)


def take_over(environ: dict[str, Any], start_response: Any = None) -> Handover:
    """Borrow the client socket from whichever gevent server runs this request.

    Args:
        environ: the request's WSGI environ.
        start_response: the server's own ``start_response`` (a pywsgi
            handler is found as its owner); None when not at hand.

    Raises:
        ServerNotSupported: the server cannot lend its socket (wsgiref, a
            threaded server); answer 500 and name a server that can.
    """
    for handover in HANDOVERS:
        found = handover(environ, start_response)
        if found is not None:
            return found
    raise ServerNotSupported(
        f"the WSGI server {environ.get('SERVER_SOFTWARE', '(unknown)')!r} cannot hand the "
        f"client socket over for a WebSocket; {SERVER_HINT}"
    )


def check_monkey_patched() -> None:
    """Raise ConfigurationError when gevent has not patched ``socket``.

    Without it, blocking libraries (database drivers, redis-py) would stall
    every connection of the process.
    """
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise ConfigurationError(
            "gevent monkey-patching is missing (socket is not patched): call "
            "gevent.monkey.patch_all() before importing anything else, or " + SERVER_HINT
        )


def check_startup(app: Any) -> None:
    """What a serving process checks before it takes requests (``serve()``, gunicorn workers).

    Warns when no route is registered (the ``ROUTING`` module not found,
    decorators never imported), and refuses an unshared layer when several
    processes serve (their rooms would split in silence).

    Raises:
        ConfigurationError: more than one process serves (gunicorn ``-w``,
            ``WEB_CONCURRENCY``) and the layer is not shared (the in-memory one).
    """
    from ...process import expected_processes

    router = app.router
    if not router.routes and not router.channel_names():
        logger.warning(
            "no consumer is routed: every WebSocket request will get 404. Register consumers "
            "(import the modules with @router.websocket, or pass router=/--routing/--consumers; "
            "Django: WSBRIDGE['ROUTING'] or <app>/consumers.py) before the server starts"
        )
    processes = expected_processes()
    if processes > 1 and "shared" not in app.layer.extensions:
        raise ConfigurationError(
            f"{processes} processes serve this app but the channel layer ({app.layer!r}) is "
            "not shared between processes: groups, long-poll sessions and background channels "
            "would not reach across them. Use the Redis layer: WSBRIDGE_LAYER=redis://"
            "127.0.0.1:6379/0 (or wrap(app, layer=...)), or run one worker (-w 1)."
        )


def app_created(app: Any) -> None:
    """A wrapped app was built: in a gunicorn worker (loaded at its start) check it now
    and chain SIGTERM so the worker closes with 1012 first."""
    from ...process import in_gunicorn

    if in_gunicorn():
        check_startup(app)
        gunicorn.install_restart_handlers(app)


def first_request(app: Any, environ: dict[str, Any]) -> None:
    """The app's first request in this process: under uWSGI, install the reload handler;
    in a gunicorn worker, tune the garbage collector as ``wsbridge serve`` does (the app
    is loaded by now; ``WSBRIDGE_GC_TUNING=0`` leaves it alone)."""
    if "uwsgi.version" in environ:
        uwsgi.install_reload_handler(app)
        return
    from ...process import in_gunicorn

    if in_gunicorn():
        from ...runtime import tune_gc

        tune_gc()
