"""Sites on gevent-websocket's gunicorn worker (``GeventWebSocketWorker``).

``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` answers the
handshake itself before the app runs and puts its own WebSocket object in
``environ["wsgi.websocket"]``. :func:`handover` takes the socket over from
there (no compression on that connection, since the handshake is done) and
installs a ``pre_start_hook`` on the worker's server so that later requests
for routed paths skip gevent-websocket's handshake and get wsbridge's full
one (served by :mod:`.pywsgi`, since its handler is a pywsgi handler);
paths wsbridge does not route stay with the site's gevent-websocket code.
"""

from __future__ import annotations

import logging
from typing import Any

from ..websocket import Handover

__all__ = ["handover", "install_pre_start_hook"]

logger = logging.getLogger("wsbridge.gunicorn")


def handover(environ: dict[str, Any], start_response: Any = None) -> Handover | None:
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
    from .pywsgi import handler_handover

    return handler_handover(handler, "gevent-websocket", upgraded=True)


def install_pre_start_hook(server: Any, bridge: Any) -> None:
    """Make gevent-websocket's handler leave wsbridge's routed paths to wsbridge.

    Its ``WebSocketHandler.run_application`` calls ``server.pre_start_hook(handler)``
    first; a true answer skips its handshake, so wsbridge answers it instead.
    """
    if getattr(server, "wsbridge_hook_installed", False):
        return
    previous = getattr(server, "pre_start_hook", None)

    def pre_start_hook(handler: Any) -> bool:
        from ..scope import request_path
        from ..wsgi import is_websocket_request

        environ = handler.environ
        if is_websocket_request(environ) and bridge.router.resolve(
            "websocket", request_path(environ)
        ):
            return True
        return bool(previous(handler)) if previous else False

    server.pre_start_hook = pre_start_hook
    server.wsbridge_hook_installed = True
    logger.debug("installed wsbridge's pre_start_hook on gevent-websocket server %r", server)
