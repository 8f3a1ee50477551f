"""gunicorn's gevent worker (``gunicorn -k gevent``): the socket hand-over and the hooks.

``-k gevent`` (no custom worker class) runs gunicorn's own async worker
(``gunicorn/workers/base_async.py``), not pywsgi. It puts the client socket
in ``environ["gunicorn.socket"]``; a WSGI app that returns the worker's
``ALREADY_HANDLED`` marker makes it skip the response entirely (no write, no
access line, no error). Its keep-alive loop then tries to parse another
request from the socket: the transport has shut the socket down by then, so
that read sees EOF and gunicorn closes the connection with a debug line only.

``-k gevent_pywsgi`` runs a pywsgi handler (:mod:`.pywsgi`); sites on
gevent-websocket's worker are :mod:`.gevent_websocket`.

On a reload (``kill -HUP <master>``), a rolling deploy or a stop, gunicorn
sends SIGTERM to the old workers, which stop accepting and wait up to
``--graceful-timeout`` for their requests to end. A WebSocket never ends by
itself, so :func:`install_restart_handlers` (called by :func:`wsbridge.wrap`
in a gunicorn worker, and by ``wsbridge_django``) chains SIGTERM: first
:func:`~wsbridge.transport.shutdown.shutdown` with 1012, then gunicorn's own
handler. With ``gunicorn --preload`` the app is loaded in the master, whose
signal handlers workers reset: the :func:`post_worker_init` hook installs it
in each worker instead.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from ..websocket import Handover

__all__ = ["handover", "install_restart_handlers", "post_worker_init", "in_gunicorn_worker"]

#: Bound on the closes and hand-overs of one SIGTERM (gunicorn's graceful timeout bounds the rest).
RESTART_TIMEOUT = 15.0

_installed = False


def _take_buffered(environ: dict[str, Any]) -> bytes:
    # Bytes gunicorn's parser read past the request head (a client that sent
    # frames without waiting for the 101): best effort, empty for real clients.
    reader = getattr(environ.get("wsgi.input"), "reader", None)
    unreader = getattr(reader, "unreader", None)
    take = getattr(unreader, "take_buffered", None)
    if callable(take):
        try:
            return bytes(take() or b"")
        except Exception:  # an older gunicorn without the same internals
            return b""
    return b""


def handover(environ: dict[str, Any], start_response: Any = None) -> Handover | None:
    """The hand-over under gunicorn's async workers (``-k gevent``), or None."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    from gunicorn.workers.base_async import ALREADY_HANDLED

    def finish(status: int, bytes_sent: int) -> Any:
        # gunicorn writes nothing for this marker and logs no access line.
        return ALREADY_HANDLED

    return Handover(sock=sock, finish=finish, preread=_take_buffered(environ), server="gunicorn")


def in_gunicorn_worker() -> bool:
    """True in a gunicorn worker process (its arbiter and worker modules are loaded)."""
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
    from ..shutdown import SERVICE_RESTART, register_app, shutdown

    register_app(app)
    if _installed or not (force or in_gunicorn_worker()):
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        import gevent

        def restart() -> None:
            # gunicorn's handler stops the worker loop, which exits once no request is
            # in progress: run it only after the sessions were handed over (bounded).
            try:
                with gevent.Timeout(RESTART_TIMEOUT, False):
                    shutdown(SERVICE_RESTART)
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

    It also tunes the garbage collector as ``wsbridge serve`` does (the app
    is loaded by now; ``WSBRIDGE_GC_TUNING=0`` leaves it alone):
    :func:`wsbridge.runtime.tune_gc`.
    """
    install_restart_handlers(force=True)
    from ...runtime import tune_gc

    tune_gc()
