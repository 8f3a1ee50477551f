"""Graceful restart and shutdown: close every connection with a code the client acts on.

One code path for every site, Django or not, under every server:

* ``wsbridge serve``: SIGTERM / SIGINT close every WebSocket with **1001
  (going away)**; SIGHUP with **1012 (service restart)**, then the process
  exits for its supervisor to start it again (:func:`wait_for_signal`).
* a gunicorn worker (``gunicorn -k gevent``): on ``kill -HUP <master>``
  (reload) or a rolling deploy, gunicorn starts new workers and sends
  SIGTERM to the old ones, which then stop accepting and wait up to
  ``--graceful-timeout`` for their requests to end. A WebSocket never ends
  by itself, so without help the worker would drop its sockets at the
  timeout (clients see 1006). :func:`install_restart_handlers` (called by
  :func:`wsbridge.wrap` in a gunicorn worker, and by
  ``wsbridge_django``) chains SIGTERM: every WebSocket is closed with 1012,
  a closing handshake the clients answer, so the worker exits as soon as
  they are gone and ``wsbridge.js`` reconnects at once to a new worker.

Long-poll sessions are handed over to the other processes through a shared
layer (a held poll is answered at once, the next request is served by
another process, which adopts the session); with the in-memory layer they
get the close code too. With ``gunicorn --preload`` the app is loaded in
the master, whose signal handlers workers reset: add
``post_worker_init = "wsbridge.transport.shutdown.post_worker_init"`` to the
gunicorn config instead.
"""

from __future__ import annotations

import logging
import signal
import weakref
from collections.abc import Iterable
from typing import Any

__all__ = [
    "GOING_AWAY",
    "SERVICE_RESTART",
    "close_connections",
    "close_for_restart",
    "install_restart_handlers",
    "post_worker_init",
    "register_app",
]

logger = logging.getLogger("wsbridge.shutdown")

#: The close code of a shutdown (Going Away); the client should not come back at once.
GOING_AWAY = 1001
#: The close code of a graceful restart (Service Restart); the client reconnects now.
SERVICE_RESTART = 1012

_apps: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False


def register_app(app: Any) -> None:
    """Remember a wrapped app whose long-poll sessions a restart must hand over."""
    if app is not None:
        _apps.add(app)


def close_connections(
    code: int, reason: str, *, apps: Iterable[Any] | None = None, longpoll_timeout: float = 0.0
) -> int:
    """Close every WebSocket with ``code``; hand long-poll sessions over. Returns how many.

    Args:
        code: 1001 (going away: shutdown) or 1012 (service restart: reconnect now).
        reason: the close frame's reason.
        apps: the wrapped apps whose long-poll sessions to hand over (default:
            those registered by :func:`install_restart_handlers`).
        longpoll_timeout: seconds long-poll consumers get to finish after their
            sessions were handed over or sent the close code (0: hand over only).
    """
    from .websocket import close_all

    count = close_all(code, reason)
    sessions = 0
    for app in list(_apps if apps is None else apps):
        transport = getattr(app, "longpoll_transport", None)
        if transport is None:
            continue
        if longpoll_timeout > 0:
            transport.close(code, timeout=longpoll_timeout)
        else:
            sessions += transport.release_sessions(code, reason)
    label = "service restart" if code == SERVICE_RESTART else "going away"
    logger.info(
        "%s: closing %d WebSocket(s) with %d (%s); %d long-poll session(s) handed over "
        "(or closed, without a shared layer)",
        "restart" if code == SERVICE_RESTART else "shutdown",
        count,
        code,
        label,
        sessions,
    )
    return count + sessions


def close_for_restart(reason: str = "service restart") -> int:
    """Close every WebSocket with 1012 and hand long-poll sessions over; returns how many."""
    return close_connections(SERVICE_RESTART, reason)


def _in_gunicorn_worker() -> bool:
    import sys

    return "gunicorn.workers.base" in sys.modules and "gunicorn.arbiter" in sys.modules


def install_restart_handlers(app: Any = None, force: bool = False) -> bool:
    """Chain SIGTERM in a gunicorn worker so it closes with 1012 first; True if installed.

    Args:
        app: the wrapped app (``wsbridge.wrap``'s result), whose long-poll
            sessions are handed over too.
        force: install outside gunicorn as well (``wsbridge serve`` has its
            own handling, so it is off by default).

    Safe to call more than once: the handler is installed once per process.
    """
    global _installed
    register_app(app)
    if _installed or not (force or _in_gunicorn_worker()):
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        import gevent

        def restart() -> None:
            # gunicorn's handler stops the worker loop, which exits once no request is
            # in progress: run it only after the sessions were handed over (bounded).
            try:
                with gevent.Timeout(15, False):
                    close_for_restart()
            finally:
                if callable(previous):
                    previous(signum, frame)

        # No I/O inside a signal handler: the closes run in a greenlet.
        gevent.spawn(restart)

    signal.signal(signal.SIGTERM, on_term)
    _installed = True
    return True


def post_worker_init(worker: Any) -> None:
    """gunicorn hook (``post_worker_init``) for ``--preload`` set-ups: install the handler.

    With ``WSBRIDGE_GC_TUNING=1`` it also tunes the garbage collector as
    ``wsbridge serve --gc-tuning`` does (the app is loaded by now):
    :func:`wsbridge.transport.server.tune_gc`.
    """
    install_restart_handlers(force=True)
    from .server import tune_gc

    tune_gc()


def wait_for_signal() -> int:
    """Block this greenlet until SIGTERM, SIGINT or SIGHUP; return the close code it means.

    SIGTERM / SIGINT: 1001 (going away). SIGHUP: 1012 (service restart).
    """
    import gevent
    from gevent.event import AsyncResult

    received: AsyncResult = AsyncResult()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, lambda: received.set(GOING_AWAY))
    gevent.signal_handler(signal.SIGHUP, lambda: received.set(SERVICE_RESTART))
    return int(received.get())
