"""wsbridge: WebSockets, long-poll, groups and background channels for WSGI sites.

The public API is re-exported here (a test guards the list). Everything is
synchronous and runs in gevent greenlets.

Names are loaded on first use (:pep:`562`): ``import wsbridge`` loads only
this module, so ``import wsbridge.protocol`` (the sans-I/O core) loads no
other wsbridge package, and a process pays for the parts it touches.
:data:`_EXPORTS` is the one table of what is re-exported from where; the
``TYPE_CHECKING`` imports below repeat it for type checkers and editors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The same names as _EXPORTS (a test compares them), for type checkers and editors;
    # "X as X" marks a re-export under mypy --strict.
    from .consumers.consumer import BaseConsumer as BaseConsumer
    from .consumers.consumer import JsonWebsocketConsumer as JsonWebsocketConsumer
    from .consumers.consumer import SyncConsumer as SyncConsumer
    from .consumers.consumer import WebsocketConsumer as WebsocketConsumer
    from .consumers.demultiplexer import WebsocketDemultiplexer as WebsocketDemultiplexer
    from .consumers.http import HttpConsumer as HttpConsumer
    from .consumers.http import SseConsumer as SseConsumer
    from .consumers.message import Channel as Channel
    from .consumers.message import Group as Group
    from .consumers.message import Message as Message
    from .consumers.routing import ChannelNameRouter as ChannelNameRouter
    from .consumers.routing import ProtocolTypeRouter as ProtocolTypeRouter
    from .consumers.routing import Router as Router
    from .consumers.routing import URLRouter as URLRouter
    from .consumers.routing import include as include
    from .consumers.routing import path as path
    from .consumers.routing import re_path as re_path
    from .consumers.routing import route as route
    from .consumers.routing import route_class as route_class
    from .consumers.routing import router as router
    from .exceptions import AcceptConnection as AcceptConnection
    from .exceptions import ChannelFull as ChannelFull
    from .exceptions import ConfigurationError as ConfigurationError
    from .exceptions import DenyConnection as DenyConnection
    from .exceptions import InvalidChannelName as InvalidChannelName
    from .exceptions import LayerUnavailable as LayerUnavailable
    from .exceptions import StopConsumer as StopConsumer
    from .exceptions import WSBridgeError as WSBridgeError
    from .identity import kick as kick
    from .identity import revoke_user as revoke_user
    from .identity import send_to_user as send_to_user
    from .layers import get_channel_layer as get_channel_layer
    from .layers import set_channel_layer as set_channel_layer
    from .sync import async_to_sync as async_to_sync
    from .sync import sync_to_async as sync_to_async
    from .worker import Worker as Worker


__version__ = "0.1.0"

#: Every name re-exported here, and the module that defines it (imported on first use).
_EXPORTS: dict[str, str] = {
    # routing
    "router": "wsbridge.consumers.routing",
    "Router": "wsbridge.consumers.routing",
    "URLRouter": "wsbridge.consumers.routing",
    "path": "wsbridge.consumers.routing",
    "re_path": "wsbridge.consumers.routing",
    "include": "wsbridge.consumers.routing",
    "route": "wsbridge.consumers.routing",
    "route_class": "wsbridge.consumers.routing",
    "ChannelNameRouter": "wsbridge.consumers.routing",
    "ProtocolTypeRouter": "wsbridge.consumers.routing",
    # consumers
    "BaseConsumer": "wsbridge.consumers.consumer",
    "SyncConsumer": "wsbridge.consumers.consumer",
    "WebsocketConsumer": "wsbridge.consumers.consumer",
    "JsonWebsocketConsumer": "wsbridge.consumers.consumer",
    "WebsocketDemultiplexer": "wsbridge.consumers.demultiplexer",
    "HttpConsumer": "wsbridge.consumers.http",
    "SseConsumer": "wsbridge.consumers.http",
    # background channels
    "Worker": "wsbridge.worker",
    # Channels 1.x
    "Channel": "wsbridge.consumers.message",
    "Group": "wsbridge.consumers.message",
    "Message": "wsbridge.consumers.message",
    # layers
    "get_channel_layer": "wsbridge.layers",
    "set_channel_layer": "wsbridge.layers",
    # Channels 4 code: asgiref's adapters, calling sync code directly
    "async_to_sync": "wsbridge.sync",
    "sync_to_async": "wsbridge.sync",
    # identity: per-user sends, revocation, admin kicks
    "send_to_user": "wsbridge.identity",
    "revoke_user": "wsbridge.identity",
    "kick": "wsbridge.identity",
    # errors
    "WSBridgeError": "wsbridge.exceptions",
    "ConfigurationError": "wsbridge.exceptions",
    "AcceptConnection": "wsbridge.exceptions",
    "DenyConnection": "wsbridge.exceptions",
    "StopConsumer": "wsbridge.exceptions",
    "ChannelFull": "wsbridge.exceptions",
    "InvalidChannelName": "wsbridge.exceptions",
    "LayerUnavailable": "wsbridge.exceptions",
}

# wrap() and serve() are defined below (they import the transport when called).
__all__ = ["__version__", *_EXPORTS, "wrap", "serve"]


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


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use, and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wsbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
