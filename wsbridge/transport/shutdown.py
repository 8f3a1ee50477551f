"""Graceful restart and shutdown: close every connection with a code the client acts on.

One function, :func:`shutdown`, for every site, Django or not, under every server:

* ``wsbridge serve``: SIGTERM / SIGINT close every WebSocket with **1001
  (going away)**; SIGHUP with **1012 (service restart)**, then the process
  exits for its supervisor to start it again (:func:`wait_for_signal`,
  :func:`~wsbridge.transport.servers.pywsgi.run_until_signal`).
* a gunicorn worker (``gunicorn -k gevent``): on ``kill -HUP <master>``
  (reload) or a rolling deploy, gunicorn sends SIGTERM to the old workers;
  the handler that
  :func:`~wsbridge.transport.servers.gunicorn.install_restart_handlers`
  chains (called by :func:`wsbridge.wrap` in a gunicorn worker, and by
  ``wsbridge_django``) closes every WebSocket with 1012 first, a closing handshake the clients
  answer, so the worker exits as soon as they are gone and ``wsbridge.js``
  reconnects at once to a new worker (:mod:`.servers.gunicorn`).
* a uWSGI worker on ``uwsgi --reload``: the same, on SIGHUP (:mod:`.servers.uwsgi`).
* a Django site: ``wsbridge_django.restart.close_for_restart`` is this one too.

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

from ..protocol.closecodes import CloseCode
from .servers.gunicorn import install_restart_handlers, post_worker_init

__all__ = [
    "GOING_AWAY",
    "SERVICE_RESTART",
    "shutdown",
    "close_connections",
    "close_for_restart",
    "install_restart_handlers",
    "post_worker_init",
    "register_app",
    "wait_for_signal",
]

logger = logging.getLogger("wsbridge.shutdown")

#: The close code of a shutdown (Going Away); the client should not come back at once.
GOING_AWAY = CloseCode.GOING_AWAY  # 1001
#: The close code of a graceful restart (Service Restart); the client reconnects now.
SERVICE_RESTART = CloseCode.SERVICE_RESTART  # 1012

_apps: weakref.WeakSet[Any] = weakref.WeakSet()


def register_app(app: Any) -> None:
    """Remember a wrapped app whose long-poll sessions a restart must hand over."""
    if app is not None:
        _apps.add(app)


def shutdown(
    code: int = SERVICE_RESTART,
    reason: str | None = None,
    *,
    apps: Iterable[Any] | None = None,
    longpoll_timeout: float = 0.0,
    drain: float = 0.0,
    label: str | None = None,
) -> int:
    """Close every WebSocket with ``code``; hand long-poll sessions over. Returns how many.

    Args:
        code: 1012 (service restart: reconnect now; the default) or 1001
            (going away: shutdown).
        reason: the close frame's reason (default: "service restart" /
            "going away").
        apps: the wrapped apps whose long-poll sessions to hand over (default:
            those registered by :func:`register_app`).
        longpoll_timeout: seconds long-poll consumers get to finish after their
            sessions were handed over or sent the close code (0: hand over only).
        drain: seconds to wait, after the closes, for the WebSockets to be
            gone (their closing handshakes); 0 returns at once.
        label: what the log line calls this ("uWSGI reload"); default
            "restart" or "shutdown" by the code.
    """
    from .websocket import active_connections, close_all

    code = int(code)  # a CloseCode goes on the wire (and into the layer) as a plain int
    words = "service restart" if code == SERVICE_RESTART else "going away"
    count = close_all(code, reason if reason is not None else words)
    sessions = 0
    for app in list(_apps if apps is None else apps):
        transport = getattr(app, "longpoll_transport", None)
        if transport is None:
            continue
        if longpoll_timeout > 0:
            transport.close(code, timeout=longpoll_timeout)
        else:
            sessions += transport.release_sessions(code, reason if reason is not None else words)
    logger.info(
        "%s: closing %d WebSocket(s) with %d (%s); %d long-poll session(s) handed over "
        "(or closed, without a shared layer)",
        label or ("restart" if code == SERVICE_RESTART else "shutdown"),
        count,
        code,
        words,
        sessions,
    )
    if drain > 0:
        import gevent

        with gevent.Timeout(drain, False):
            while active_connections():
                gevent.sleep(0.05)
    return count + sessions


def close_connections(
    code: int, reason: str, *, apps: Iterable[Any] | None = None, longpoll_timeout: float = 0.0
) -> int:
    """:func:`shutdown` under its former name (same arguments)."""
    return shutdown(code, reason, apps=apps, longpoll_timeout=longpoll_timeout)


def close_for_restart(reason: str = "service restart") -> int:
    """Close every WebSocket with 1012 and hand long-poll sessions over; returns how many."""
    return shutdown(SERVICE_RESTART, reason)


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
