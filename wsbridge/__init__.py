"""wsbridge: WebSockets, long-poll, groups and background channels for WSGI sites.

The public API is re-exported here (a test guards the list). Everything is
synchronous and runs in gevent greenlets.
"""

from __future__ import annotations

from typing import Any

from .consumers.consumer import BaseConsumer, JsonWebsocketConsumer, SyncConsumer, WebsocketConsumer
from .consumers.demultiplexer import WebsocketDemultiplexer
from .consumers.http import HttpConsumer, SseConsumer
from .consumers.message import Channel, Group, Message
from .consumers.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    Router,
    URLRouter,
    include,
    path,
    re_path,
    route,
    route_class,
    router,
)
from .exceptions import (
    AcceptConnection,
    ChannelFull,
    ConfigurationError,
    DenyConnection,
    InvalidChannelName,
    LayerUnavailable,
    StopConsumer,
    WSBridgeError,
)
from .layers import get_channel_layer, set_channel_layer
from .sync import async_to_sync, sync_to_async

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # routing
    "router",
    "Router",
    "URLRouter",
    "path",
    "re_path",
    "include",
    "route",
    "route_class",
    "ChannelNameRouter",
    "ProtocolTypeRouter",
    # consumers
    "BaseConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketDemultiplexer",
    "HttpConsumer",
    "SseConsumer",
    # background channels
    "Worker",
    # Channels 1.x
    "Channel",
    "Group",
    "Message",
    # layers
    "get_channel_layer",
    "set_channel_layer",
    # Channels 4 code: asgiref's adapters, calling sync code directly
    "async_to_sync",
    "sync_to_async",
    # identity: per-user sends, revocation, admin kicks
    "send_to_user",
    "revoke_user",
    "kick",
    # serving
    "wrap",
    "serve",
    # errors
    "WSBridgeError",
    "ConfigurationError",
    "AcceptConnection",
    "DenyConnection",
    "StopConsumer",
    "ChannelFull",
    "InvalidChannelName",
    "LayerUnavailable",
]


def wrap(app: Any, **options: Any) -> Any:
    """Wrap a WSGI app so WebSocket and long-poll requests reach wsbridge.

    See :func:`wsbridge.transport.wsgi.wrap` for the options.
    """
    from .transport.wsgi import wrap as _wrap

    return _wrap(app, **options)


def serve(app: Any, **options: Any) -> None:
    """Serve a WSGI app (wrapped or not) on gevent; see :func:`wsbridge.transport.server.serve`."""
    from .transport.server import serve as _serve

    _serve(app, **options)


# Names whose modules need gevent are loaded on first use, so that importing
# wsbridge (and the sans-I/O wsbridge.protocol under it) loads no I/O module.
_LAZY = {
    "Worker": "wsbridge.worker",
    "send_to_user": "wsbridge.identity",
    "revoke_user": "wsbridge.identity",
    "kick": "wsbridge.identity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsbridge' has no attribute {name!r}")
