"""Socket hand-over under gunicorn: stock ``-k gevent`` and gevent-websocket's worker.

``gunicorn -k gevent`` (no custom worker class) runs gunicorn's own async
worker (``gunicorn/workers/base_async.py``), not pywsgi. It puts the client
socket in ``environ["gunicorn.socket"]``; a WSGI app that returns the
worker's ``ALREADY_HANDLED`` marker makes it skip the response entirely
(no write, no access line, no error). Its keep-alive loop then tries to
parse another request from the socket: the transport has shut the socket
down by then, so that read sees EOF and gunicorn closes the connection with
a debug line only.

``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` answers the
handshake itself before the app runs and puts its own WebSocket object in
``environ["wsgi.websocket"]``. wsbridge takes the socket over from there
(no compression on that connection, since the handshake is done) and
installs a ``pre_start_hook`` on the worker's server so that later
requests for routed paths skip gevent-websocket's handshake and get
wsbridge's full one; paths wsbridge does not route stay with the site's
gevent-websocket code.

``gunicorn -k gevent_pywsgi`` runs a pywsgi handler, found by
:func:`wsbridge.transport.server.foreign_pywsgi_handover`.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["gunicorn_handover", "gevent_websocket_handover"]

logger = logging.getLogger("wsbridge.gunicorn")


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


def gunicorn_handover(environ: dict[str, Any]) -> Any:
    """The hand-over under gunicorn's async workers (``-k gevent``), or None."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    from gunicorn.workers.base_async import ALREADY_HANDLED

    from .websocket import Handover

    def finish(status: int, bytes_sent: int) -> Any:
        # gunicorn writes nothing for this marker and logs no access line.
        return ALREADY_HANDLED

    return Handover(sock=sock, finish=finish, preread=_take_buffered(environ), server="gunicorn")


def gevent_websocket_handover(environ: dict[str, Any]) -> Any:
    """Take the socket from gevent-websocket's handler, which already said 101; or None."""
    websocket = environ.get("wsgi.websocket")
    if websocket is None:
        return None
    handler = getattr(websocket, "handler", None)
    if handler is None or getattr(handler, "socket", None) is None:
        return None
    # Its handler must not send its own close frame once the app returns.
    websocket.closed = True
    bridge = environ.get("wsbridge.app")
    if bridge is not None:
        install_pre_start_hook(handler.server, bridge)
    from .server import _pywsgi_handover

    return _pywsgi_handover(handler, "gevent-websocket", upgraded=True)


def install_pre_start_hook(server: Any, bridge: Any) -> None:
    """Make gevent-websocket's handler leave wsbridge's routed paths to wsbridge.

    Its ``WebSocketHandler.run_application`` calls ``server.pre_start_hook(handler)``
    first; a true answer skips its handshake, so wsbridge answers it instead.
    """
    if getattr(server, "wsbridge_hook_installed", False):
        return
    previous = getattr(server, "pre_start_hook", None)

    def pre_start_hook(handler: Any) -> bool:
        from .scope import request_path
        from .wsgi import is_websocket_request

        environ = handler.environ
        if is_websocket_request(environ) and bridge.router.resolve(
            "websocket", request_path(environ)
        ):
            return True
        return bool(previous(handler)) if previous else False

    server.pre_start_hook = pre_start_hook
    server.wsbridge_hook_installed = True
    logger.debug("installed wsbridge's pre_start_hook on gevent-websocket server %r", server)
