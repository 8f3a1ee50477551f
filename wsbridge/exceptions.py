"""Every exception wsbridge raises, under one root.

The tree separates what the *peer* did wrong (a client, a foreign writer in
Redis) from what the *caller* did wrong (application code, configuration)::

    WSBridgeError
    ├── ConfigurationError            caller: bad settings, missing monkey-patching
    │   └── ServerNotSupported        caller: the WSGI server cannot hand the socket over
    ├── RoutingError                  caller: bad pattern, duplicate registration
    ├── ConsumerError                 caller: control flow for consumers
    │   ├── AcceptConnection          accept the handshake from deep inside connect()
    │   ├── DenyConnection            refuse the handshake (HTTP 403)
    │   ├── StopConsumer              end this consumer cleanly
    │   └── UnknownMessageType        no handler for a message type
    ├── LayerError                    the channel layer
    │   ├── InvalidChannelName        caller (also a ValueError)
    │   ├── ChannelFull               the channel is at capacity
    │   ├── MessageTooLarge           caller: the message exceeds the size limit
    │   ├── LayerUnavailable          the backend (Redis) cannot be reached now
    │   └── MessageDecodeError        peer: bytes in the backend that do not decode
    ├── ProtocolError                 peer: the client broke the wire protocol
    │   └── HTTPError                 carries ``status`` (4xx) for an HTTP answer
    │       ├── BadRequest            400
    │       ├── Forbidden             403 (Origin refused, bad token binding)
    │       ├── NotFound              404 (no route, unknown session)
    │       ├── MethodNotAllowed      405
    │       ├── Conflict              409 (a second pending poll)
    │       ├── Gone                  410 (expired session)
    │       └── PayloadTooLarge       413
    └── ConnectionClosed              the connection is gone; ``code`` and ``reason``

Deprecated spellings that still work (Channels 1.x settings) warn with
``WsbridgeDeprecationWarning``, a ``DeprecationWarning``, outside the tree.

Application code catches ``DenyConnection`` / ``StopConsumer`` by raising them;
``TypeError`` (not a wsbridge error) is raised for message contents that are
not msgpack types, since that is a programming mistake of the caller.
"""

from __future__ import annotations

__all__ = [
    "WSBridgeError",
    "ConfigurationError",
    "ServerNotSupported",
    "RoutingError",
    "ConsumerError",
    "AcceptConnection",
    "DenyConnection",
    "StopConsumer",
    "UnknownMessageType",
    "LayerError",
    "InvalidChannelName",
    "ChannelFull",
    "MessageTooLarge",
    "LayerUnavailable",
    "MessageDecodeError",
    "ProtocolError",
    "HTTPError",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "Gone",
    "PayloadTooLarge",
    "ConnectionClosed",
    "WsbridgeDeprecationWarning",
    "warn_deprecated",
]


class WSBridgeError(Exception):
    """Root of every exception raised by wsbridge."""


# -- the caller's mistakes -------------------------------------------------


class ConfigurationError(WSBridgeError):
    """Settings or the runtime environment are wrong; the message says how to fix it."""


class ServerNotSupported(ConfigurationError):
    """The WSGI server cannot hand the client socket over to wsbridge.

    Raised (and answered with HTTP 500 plus a log line) instead of hanging when
    wsbridge runs under, say, a threaded WSGI server. Use ``wsbridge serve`` or
    ``gunicorn -k gevent`` instead.
    """


class RoutingError(WSBridgeError):
    """A route pattern is invalid, or a name is registered twice."""


class ConsumerError(WSBridgeError):
    """Base for consumer control-flow exceptions."""


class AcceptConnection(ConsumerError):
    """Raise from ``connect()`` (or code it calls) to accept the WebSocket handshake."""


class DenyConnection(ConsumerError):
    """Raise from ``connect()`` to refuse the WebSocket handshake with HTTP 403."""


class StopConsumer(ConsumerError):
    """Raise from a handler to end this consumer; the connection is closed."""


class UnknownMessageType(ConsumerError, ValueError):
    """A message's ``type`` has no handler method on the consumer."""


# -- the channel layer ---------------------------------------------------------


class LayerError(WSBridgeError):
    """Base for channel layer errors."""


class InvalidChannelName(LayerError, ValueError):
    """A channel or group name breaks the naming rules (see docs/topics/layers.rst)."""


class ChannelFull(LayerError):
    """The channel already holds its capacity of messages; the send was refused."""


class MessageTooLarge(LayerError, ValueError):
    """The encoded message exceeds the layer's size limit."""


class LayerUnavailable(LayerError):
    """The layer's backend cannot be reached right now; the message was not sent."""


class MessageDecodeError(LayerError):
    """Bytes read from the backend do not decode into a message (foreign writer?)."""


# -- the peer's mistakes ---------------------------------------------------------


class ProtocolError(WSBridgeError):
    """The client broke the wire protocol."""


class HTTPError(ProtocolError):
    """A client error answered over HTTP; ``status`` is the response code."""

    status: int = 400
    phrase: str = "Bad Request"

    def __init__(self, reason: str = "", *, status: int | None = None) -> None:
        super().__init__(reason or self.phrase)
        if status is not None:
            self.status = status
        self.reason = reason or self.phrase


class BadRequest(HTTPError):
    """The request is malformed (HTTP 400)."""

    status = 400
    phrase = "Bad Request"


class Forbidden(HTTPError):
    """The request is refused (HTTP 403): Origin not allowed, token bound elsewhere."""

    status = 403
    phrase = "Forbidden"


class NotFound(HTTPError):
    """Nothing is routed here, or the session is unknown (HTTP 404)."""

    status = 404
    phrase = "Not Found"


class MethodNotAllowed(HTTPError):
    """The HTTP method is wrong for this endpoint (HTTP 405)."""

    status = 405
    phrase = "Method Not Allowed"


class Conflict(HTTPError):
    """The request conflicts with one in progress (HTTP 409)."""

    status = 409
    phrase = "Conflict"


class Gone(HTTPError):
    """The session has expired or was closed (HTTP 410)."""

    status = 410
    phrase = "Gone"


class PayloadTooLarge(HTTPError):
    """The request body exceeds the configured limit (HTTP 413)."""

    status = 413
    phrase = "Payload Too Large"


class ConnectionClosed(WSBridgeError):
    """The connection is closed; sending on it is no longer possible."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"connection closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


# -- deprecations ------------------------------------------------------------------


class WsbridgeDeprecationWarning(DeprecationWarning):
    """A deprecated spelling (a Channels 1.x setting) that still works; says the new one."""


_warned: set[str] = set()


def warn_deprecated(message: str) -> None:
    """Warn once per process: a ``WsbridgeDeprecationWarning`` and one WARNING log line.

    The log line is what a server's operator sees (Python hides
    ``DeprecationWarning`` outside ``__main__`` by default).
    """
    import logging
    import warnings

    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, WsbridgeDeprecationWarning, stacklevel=3)
    logging.getLogger("wsbridge").warning("deprecated: %s", message)
