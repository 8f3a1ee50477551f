"""uWSGI in gevent mode: the socket hand-over and the graceful reload.

Run the same wrapped app as under ``wsbridge serve`` or gunicorn::

    uwsgi --http-socket 127.0.0.1:8000 --gevent 1000 --gevent-early-monkey-patch \\
          --master --processes 4 --module mysite.wsgi:application

**WebSocket: the raw socket, not uWSGI's WebSocket API.** uWSGI offers
``uwsgi.websocket_handshake()`` / ``websocket_recv()`` / ``websocket_send()``,
which answer the handshake and frame messages in C. That API has no way to
send a close code (so no 1012 on reload, no 1009 for a too-big message, no
1008 for a refused Origin), no permessage-deflate, its own size limit and
ping policy, and it would be a second WebSocket implementation beside the one
wsbridge drives on websockets' sans-I/O protocol. Instead
:func:`handover` borrows the request's connection
(``uwsgi.connection_fd()``, duplicated so that uWSGI still owns and closes its
own descriptor) and wsbridge's one transport runs on it: the same handshake
checks, limits, compression and close codes as under every other server.
No ``--http-websockets`` is needed with ``--http-socket`` (that option is
for uWSGI's HTTP router, ``--http``, which then passes the bytes through);
behind nginx use ``--http-socket`` too (docs/topics/deployment.rst).

The app answers the WebSocket on the socket itself and returns an empty body
without calling ``start_response``, so uWSGI writes nothing more; its access
line for that request reads "500, 0 bytes" (uWSGI's default when no status
was set): wsbridge's own log and metrics carry the real outcome.

**Graceful reload.** ``uwsgi --reload PIDFILE`` (SIGHUP to the master), a
chain reload and a graceful stop send SIGHUP to each worker; in gevent mode
the worker then stops accepting and waits, up to ``--worker-reload-mercy``
seconds, for its running requests to end. A WebSocket never ends by itself,
so :func:`install_reload_handler` (called by the wrapped app on its first
request in each worker) adds a gevent SIGHUP handler beside uWSGI's own:
every WebSocket is closed with **1012 (service restart)** and long-poll
sessions are handed over through the channel layer, by the same
:func:`~wsbridge.transport.shutdown.shutdown` as under gunicorn; the worker
exits as soon as its requests are done and the clients continue on the new
workers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from ...protocol.closecodes import CloseCode
from ..websocket import Handover

__all__ = [
    "handover",
    "install_reload_handler",
    "close_for_reload",
    "SERVICE_RESTART",
    "FORK_HOOKS_MISSING",
]

logger = logging.getLogger("wsbridge.uwsgi")

SERVICE_RESTART = CloseCode.SERVICE_RESTART  # 1012
#: Bound on the closes and hand-overs of one reload (uWSGI's mercy bounds the rest).
RELOAD_TIMEOUT = 15.0

_installed_pid: int | None = None

# uWSGI forks in C and, by default, runs none of Python's at-fork hooks, which
# give every layer and long-poll transport built before a fork its own identity
# (wsbridge.layers.base): without them the workers would share one inbox.
_IMPORTED_IN = os.getpid()
_fork_hooks_ran_in: int | None = None


def _note_fork_hooks() -> None:
    global _fork_hooks_ran_in
    _fork_hooks_ran_in = os.getpid()


os.register_at_fork(after_in_child=_note_fork_hooks)

FORK_HOOKS_MISSING = (
    "wsbridge was loaded in the uWSGI master and this worker was forked without Python's "
    "at-fork hooks, so its channel layer and long-poll sessions share their identity with "
    "the other workers (group messages and long-poll polls would go astray): run uWSGI "
    "with --lazy-apps (or --py-call-osafterfork); see docs/topics/deployment.rst"
)


def _uwsgi_module(environ: dict[str, Any] | None = None) -> Any:
    # The `uwsgi` module exists only inside a uWSGI process.
    if environ is not None and "uwsgi.version" not in environ:
        return None
    return sys.modules.get("uwsgi")


def handover(environ: dict[str, Any], start_response: Any = None) -> Handover | None:
    """The hand-over of the request's connection under uWSGI's gevent loop, or None.

    None outside uWSGI, and under uWSGI without ``--gevent`` (a prefork or
    threaded worker cannot hold a WebSocket beside its other requests): the
    caller then answers 500 naming a server that can.
    """
    uwsgi = _uwsgi_module(environ)
    if uwsgi is None:
        return None
    loop = getattr(uwsgi, "loop", None)  # bytes under Python 3 (uWSGI's PyString)
    if (loop.decode() if isinstance(loop, bytes) else loop) != "gevent":
        logger.debug("uWSGI runs the %r loop, not gevent: no WebSocket", loop)
        return None
    from gevent import socket

    # A duplicate: wsbridge shuts the connection down when the WebSocket is
    # over and closes its own descriptor; uWSGI closes the original at the end
    # of the request, as for any other.
    sock = socket.socket(fileno=os.dup(uwsgi.connection_fd()))

    def finish(status: int, bytes_sent: int) -> list[bytes]:
        sock.close()
        # No start_response: uWSGI writes nothing more on the connection.
        return []

    return Handover(sock=sock, finish=finish, server="uwsgi")


def close_for_reload(reason: str = "service restart") -> int:
    """Close every WebSocket with 1012 and hand long-poll sessions over; returns how many.

    :func:`~wsbridge.transport.shutdown.shutdown` under its uWSGI name: with a
    shared (Redis) layer the long-poll sessions survive (their held poll is
    answered now and the next request is adopted by another worker); with the
    in-memory layer they get a 1012 close instead.
    """
    from ..shutdown import shutdown

    return shutdown(SERVICE_RESTART, reason, label="uWSGI reload")


_reload_started_in: int | None = None


def _on_sighup() -> None:
    import gevent

    global _reload_started_in
    _reload_started_in = os.getpid()
    # gevent runs signal handlers in a new greenlet: I/O is allowed here.
    with gevent.Timeout(RELOAD_TIMEOUT, False):
        close_for_reload()


def _at_exit(chained: Any) -> None:
    """uWSGI's ``atexit``: hand over what the SIGHUP handler never got to.

    A worker serving no request when SIGHUP comes (its long-poll sessions
    between two polls) is stopped by uWSGI at once, before the handler's
    greenlet runs; its sessions would then wait for its lease to end.
    """
    import gevent

    try:
        if _reload_started_in != os.getpid():
            with gevent.Timeout(RELOAD_TIMEOUT, False):
                close_for_reload()
    except Exception:  # the worker is exiting: say why, do not stop the others' hooks
        logger.exception("uWSGI exit: handing long-poll sessions over failed")
    if callable(chained):
        chained()


def install_reload_handler(app: Any) -> bool:
    """In a uWSGI worker, close WebSockets with 1012 on SIGHUP; True if installed now.

    Called by the wrapped app on its first request in each worker (a worker
    that has served nothing has nothing to close). Safe to call again: one
    handler per process, every app registered for its long-poll sessions.
    Logs an ERROR (once per worker) when the app was loaded in the master and
    the worker was forked without Python's at-fork hooks: add ``--lazy-apps``.
    """
    global _installed_pid
    if sys.modules.get("uwsgi") is None:
        return False
    from ..shutdown import register_app

    register_app(app)
    if _installed_pid == os.getpid():
        return False
    if _IMPORTED_IN != os.getpid() and _fork_hooks_ran_in != os.getpid():
        logger.error(FORK_HOOKS_MISSING)
    import gevent

    # Beside uWSGI's own gevent SIGHUP watcher (which stops accepting and
    # waits for the running requests): libev runs every watcher of a signal.
    gevent.signal_handler(signal.SIGHUP, _on_sighup)
    uwsgi: Any = sys.modules["uwsgi"]
    chained = getattr(uwsgi, "atexit", None)
    uwsgi.atexit = lambda: _at_exit(chained)
    _installed_pid = os.getpid()
    logger.debug("installed the uWSGI reload handler in worker %d", _installed_pid)
    return True
