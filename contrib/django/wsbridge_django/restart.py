"""Graceful restart under gunicorn: SIGTERM closes every WebSocket with 1012 first.

On ``kill -HUP <master>`` (reload) or a rolling deploy, gunicorn starts new
workers and sends SIGTERM to the old ones, which then stop accepting and
wait up to ``--graceful-timeout`` for their requests to end. A WebSocket
never ends by itself, so without help the old worker would hold its
sockets until the timeout and then drop them (clients see 1006).

:func:`install_restart_handlers` (called by ``get_wsgi_application()`` in
each worker) chains SIGTERM: every WebSocket of the worker is closed with
**1012 (service restart)**, a closing handshake the clients answer, so the
worker exits as soon as they are gone and ``wsbridge.js`` reconnects at once
(to a new worker; the old one no longer accepts). Long-poll sessions are
handed over through the Redis layer instead: a held poll is answered at
once (an empty batch) and the next request is served by another worker,
which adopts the session (with the in-memory layer they get 1012 too). The
worker stops accepting once that is done. With ``--preload`` the app
is loaded in the master, whose signal handlers workers reset: add
``post_worker_init = "wsbridge_django.restart.post_worker_init"`` to the
gunicorn config instead (see docs/topics/deployment-django.rst).

``wsbridge serve`` handles its own signals: SIGTERM closes with 1001.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

__all__ = ["install_restart_handlers", "close_for_restart", "post_worker_init", "SERVICE_RESTART"]

logger = logging.getLogger("wsbridge.django")

#: The close code sent to WebSockets on a graceful restart (Service Restart).
SERVICE_RESTART = 1012
_installed = False


_apps: list[Any] = []


def close_for_restart(reason: str = "service restart") -> int:
    """Close every WebSocket with 1012 and hand long-poll sessions over; returns how many.

    Long-poll sessions move to the other workers through the channel layer
    (``LongPollTransport.release_sessions``): their pending poll is answered
    now with an empty batch instead of holding the worker until its
    timeout. With the in-memory layer they get a 1012 close frame instead.
    """
    from wsbridge.transport.websocket import close_all

    count = close_all(SERVICE_RESTART, reason)
    sessions = 0
    for app in _apps:
        transport = getattr(app, "longpoll_transport", None)
        if transport is not None:
            sessions += transport.release_sessions(SERVICE_RESTART, reason)
    logger.info(
        "restart: closing %d WebSocket(s) with %d (service restart); %d long-poll session(s) "
        "handed over (or closed, without a shared layer)",
        count,
        SERVICE_RESTART,
        sessions,
    )
    return count + sessions


def _in_gunicorn_worker() -> bool:
    return "gunicorn.workers.base" in sys.modules and "gunicorn.arbiter" in sys.modules


def install_restart_handlers(app: Any = None, force: bool = False) -> bool:
    """Chain SIGTERM in a gunicorn worker so it closes with 1012 first; True if installed.

    Args:
        app: the wrapped app (``wsbridge.wrap``'s result), whose long-poll
            sessions are closed too.
        force: install outside gunicorn as well (``wsbridge serve`` and
            ``runserver`` have their own handling, so it is off by default).

    Safe to call more than once.
    """
    global _installed
    if app is not None and app not in _apps:
        _apps.append(app)
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
    from wsbridge.transport.server import tune_gc

    tune_gc()
