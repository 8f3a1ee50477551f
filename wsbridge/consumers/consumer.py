"""Class consumers: ``SyncConsumer``, ``WebsocketConsumer``, ``JsonWebsocketConsumer``.

A consumer instance serves one connection. Every event for it (socket
events and layer messages sent to ``self.channel_name`` or its groups)
arrives through :meth:`BaseConsumer.dispatch`, in order, one at a time, in a
greenlet: ``{"type": "chat.message"}`` calls ``chat_message(event)``.

The API is Django Channels 4's synchronous one; there is nothing to await
and no ``async_to_sync`` to wrap layer calls in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from ..exceptions import (
    AcceptConnection,
    ConfigurationError,
    DenyConnection,
    LayerError,
    StopConsumer,
    UnknownMessageType,
)
from ..layers.base import BaseChannelLayer
from .fastlane import check_fastlane

__all__ = [
    "BaseConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
    "JsonWebsocketConsumer",
    "get_handler_name",
    "websocket_reply_events",
    "Send",
    "log_unanswered_connect",
    "UNANSWERED_LOG_INTERVAL",
]

logger = logging.getLogger("wsbridge.consumers")

Send = Callable[[dict[str, Any]], None]


#: Message type -> handler name, for the types seen (bounded: types can come from anyone).
_HANDLER_NAMES: dict[str, str] = {}
_HANDLER_NAMES_MAX = 1024


#: Handlers whose events carry a (group, seq) pair naming one presence change.
_PRESENCE_HANDLERS = frozenset({"presence_join", "presence_leave"})
#: Presence changes a consumer remembers to drop a repeated event.
PRESENCE_SEEN = 1024


def get_handler_name(message: dict[str, Any]) -> str:
    """Return the method name for a message: ``"chat.message"`` -> ``"chat_message"``.

    Raises:
        UnknownMessageType: no ``type``, a non-str type, or a name starting
            with ``_`` (private methods are never reachable from messages).
    """
    kind = message.get("type")
    if kind.__class__ is str:  # the group path: one dict look-up per delivery
        name = _HANDLER_NAMES.get(kind)
        if name is not None:
            return name
    if not isinstance(kind, str) or not kind:
        raise UnknownMessageType(f"message has no 'type' str (keys: {sorted(message)})")
    name = kind.replace(".", "_")
    if name.startswith("_"):
        raise UnknownMessageType(
            f"message type {kind!r} is refused: handler names starting with '_' are private"
        )
    if len(_HANDLER_NAMES) < _HANDLER_NAMES_MAX:
        _HANDLER_NAMES[kind] = name
    return name


class BaseConsumer:
    """Dispatches each message to the method its type names.

    Built by the server for each connection (see :meth:`build`); ``scope``,
    ``channel_name`` and ``channel_layer`` are ready when the first handler
    runs. Subclass :class:`WebsocketConsumer` for WebSockets; subclass this
    (as ``SyncConsumer``) to handle raw events, or background channel messages.
    """

    #: Which scope type this consumer serves (``"websocket"`` or ``"http"``).
    scope_type: ClassVar[str] = "websocket"
    #: Which configured channel layer to use (Channels' attribute).
    channel_layer_alias: ClassVar[str] = "default"

    def __init__(
        self,
        scope: dict[str, Any],
        *,
        send: Send,
        channel_layer: BaseChannelLayer | None = None,
        channel_name: str | None = None,
    ) -> None:
        self.scope = scope
        self.base_send = send
        self.channel_layer = channel_layer
        self.channel_name = channel_name

    @classmethod
    def build(cls, scope: dict[str, Any], **kwargs: Any) -> BaseConsumer:
        """Make the instance for one connection (the connection runner calls this)."""
        return cls(scope, **kwargs)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> type[BaseConsumer]:
        """Channels 4 spelling for routes: returns the class (a subclass with ``initkwargs``).

        There is no ASGI here; this keeps ``path("ws/", Consumer.as_asgi())``
        working. Each keyword must name an existing class attribute, which the
        subclass overrides (as Django's ``View.as_view`` does).
        """
        if not initkwargs:
            return cls
        for key in initkwargs:
            if not hasattr(cls, key):
                raise TypeError(f"{cls.__name__}.as_asgi() got {key!r}, not an attribute of it")
        return type(
            cls.__name__,
            (cls,),
            {**initkwargs, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )

    def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler for ``message``'s type.

        A message without ``type`` is a Channels 1.x reply (``{"text": ...}``,
        ``{"bytes": ...}``, ``{"close": ...}``, ``{"accept": True}``) and goes
        straight to the client.

        Raises:
            UnknownMessageType: the type names no method (the runner then
                closes this connection with 1011 and logs it once).
        """
        if "type" not in message and _is_reply(message):
            self.send_reply(message)
            return
        name = get_handler_name(message)
        if name in _PRESENCE_HANDLERS and self._presence_seen_before(message):
            return
        handler = getattr(self, name, None)
        if handler is None or not callable(handler):
            raise UnknownMessageType(
                f"{type(self).__name__} has no handler for message type {message['type']!r}: "
                f"define {name}(self, event) on it"
            )
        handler(message)

    def _presence_seen_before(self, message: dict[str, Any]) -> bool:
        # A process killed between sending a presence event and clearing it from the
        # group's outbox has its reaper send it again (layers/redis/presence.py): the
        # (group, seq) pair names one change, so a repeat is dropped here.
        key = (message.get("group"), message.get("seq"))
        if key[1] is None:
            return False
        seen: dict[tuple[Any, Any], None] | None = self.__dict__.get("_presence_seen")
        if seen is None:
            seen = self.__dict__["_presence_seen"] = {}
        if key in seen:
            return True
        seen[key] = None
        if len(seen) > PRESENCE_SEEN:
            del seen[next(iter(seen))]
        return False

    def send(self, message: dict[str, Any]) -> None:
        """Send a raw event to the client side (``{"type": "websocket.accept"}``...)."""
        self.base_send(message)

    # -- presence and recovery (docs/topics/presence.rst, recovery.rst) -----------

    def track(self, group: str, info: dict[str, Any] | None = None) -> bool:
        """Show this connection as present in ``group`` (joined first); True if its user joined.

        ``info`` (a small msgpack dict) is merged over :meth:`presence_identity`'s
        defaults (under Django: ``username``). Untracked on disconnect.

        Raises:
            ConfigurationError: the layer has no presence.
            PermissionError: this connection is not a member of ``group``.
            ValueError: ``info`` is over the layer's ``presence_info_limit``.
        """
        layer = self._presence_layer()
        user, defaults = self.presence_identity()
        merged = {**defaults, **(info or {})}
        return bool(
            layer.presence_track(group, self.channel_name, user=user, info=merged)  # type: ignore[attr-defined]
        )

    def untrack(self, group: str) -> bool:
        """Stop showing this connection in ``group``; True if its user left."""
        layer = self._presence_layer()
        return bool(layer.presence_untrack(group, self.channel_name))  # type: ignore[attr-defined]

    def _presence_layer(self) -> BaseChannelLayer:
        layer = self.channel_layer
        if layer is None or self.channel_name is None or "presence" not in layer.extensions:
            raise ConfigurationError(
                f"{type(self).__name__}.track() needs a channel layer with presence "
                "(MemoryLayer, or RedisLayer in its native layout)"
            )
        return layer

    def presence_identity(self) -> tuple[str | None, dict[str, Any]]:
        """The user id and default info of this connection's presence entries.

        The default takes an authenticated ``scope["user"]`` (Django's):
        ``(str(user.pk), {"username": ...})``; anonymous: ``(None, {})``, each
        connection then counts as its own user. Override to choose others.
        """
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return None, {}
        name = user.get_username() if hasattr(user, "get_username") else str(user)
        return str(getattr(user, "pk", name)), {"username": name}

    def recovery_positions(self) -> dict[str, str] | None:
        """The positions this client asked to recover from (None: it did not ask).

        Read from the ``wsbridge_recover`` query parameter that ``wsbridge.js``
        sends; see :mod:`wsbridge.protocol.recovery`.

        Raises:
            BadRequest: too many positions, too long or malformed.
        """
        from ..protocol.recovery import parse_recover_param

        return parse_recover_param(self.scope.get("query_string", b""))

    def presence_join(self, event: dict[str, Any]) -> None:
        """A user joined a presence group this connection is in; override to show it."""

    def presence_leave(self, event: dict[str, Any]) -> None:
        """A user left a presence group (their last connection went); override to show it."""

    def history_recovery(self, event: dict[str, Any]) -> None:
        """How recovering ``event["group"]`` went (``recovered``, ``missed``, ``position``).

        Sent before the missed messages. With ``recovered`` False nothing
        was replayed: reload what the page shows. The page is told too.
        """

    def send_reply(self, content: dict[str, Any]) -> None:
        """Forward a Channels 1.x reply dict to the client."""
        for event in websocket_reply_events(content):
            self.base_send(event)


#: Seconds between two INFO lines about one consumer's unanswered connects.
UNANSWERED_LOG_INTERVAL = 60.0

# consumer label -> [time of the last line, refusals since]
_unanswered: dict[str, list[float]] = {}


def _consumer_label(consumer: Any) -> str:
    handler = getattr(consumer, "handlers", {}).get("websocket.connect")  # 1.x function consumer
    target = handler if handler is not None else type(consumer)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"


def log_unanswered_connect(consumer: Any, scope: dict[str, Any]) -> None:
    """Say (INFO) why a handshake got 403: the connect handler neither accepted nor refused.

    Channels 1.x held such a socket open until the client gave up; wsbridge
    refuses it at once. One line per consumer, then at most one per
    :data:`UNANSWERED_LOG_INTERVAL` with the count since.
    """
    label = _consumer_label(consumer)
    now = time.monotonic()
    state = _unanswered.get(label)
    if state is not None and now - state[0] < UNANSWERED_LOG_INTERVAL:
        state[1] += 1
        return
    since = f" ({int(state[1])} more since the last line)" if state and state[1] else ""
    _unanswered[label] = [now, 0]
    logger.info(
        "refused %s %s with 403: the connect handler %s returned without accepting or "
        "refusing; call self.accept() (1.x: message.reply_channel.send({'accept': True})) "
        "or refuse explicitly%s",
        scope.get("transport", "websocket"),
        scope.get("path"),
        label,
        since,
    )


#: Channels 4's name for a consumer that handles raw events by type.
SyncConsumer = BaseConsumer

_REPLY_KEYS = frozenset(("text", "bytes", "close", "accept"))


def _is_reply(message: dict[str, Any]) -> bool:
    keys = set(message)
    return bool(keys & _REPLY_KEYS) and keys <= _REPLY_KEYS | {"reply_channel", "order"}


def websocket_reply_events(content: dict[str, Any]) -> list[dict[str, Any]]:
    """Translate a Channels 1.x reply dict into websocket.* events, in order.

    ``{"accept": True}`` accepts; ``{"accept": False}`` (with nothing to
    send) refuses the handshake; ``text`` / ``bytes`` send a frame;
    ``{"close": True}`` closes with 1000, ``{"close": 4001}`` with that code.
    """
    events: list[dict[str, Any]] = []
    accept = content.get("accept")
    if accept:
        events.append({"type": "websocket.accept"})
    if content.get("text") is not None:
        events.append({"type": "websocket.send", "text": content["text"]})
    if content.get("bytes") is not None:
        events.append({"type": "websocket.send", "bytes": content["bytes"]})
    close = content.get("close")
    if close is not None and close is not False:
        code = 1000 if close is True else int(close)
        events.append({"type": "websocket.close", "code": code})
    elif accept is False and not events:
        events.append({"type": "websocket.close", "code": 1000})
    return events


class WebsocketConsumer(BaseConsumer):
    """A WebSocket consumer with Django Channels' synchronous API.

    Override ``connect``, ``receive`` and ``disconnect``; call ``accept``,
    ``send`` and ``close``. Set ``groups`` to join groups on connect (and
    leave them on disconnect). Raise ``DenyConnection`` in ``connect`` to
    refuse the handshake with HTTP 403; returning without accepting refuses
    it too, with an INFO log line naming the consumer and path.
    """

    scope_type: ClassVar[str] = "websocket"
    groups: ClassVar[Iterable[str] | None] = None
    #: Layer message types sent to the client as they are, without a handler:
    #: ``{"chat.message": "text"}`` sends ``event["text"]`` (wsbridge.consumers.fastlane).
    fastlane: ClassVar[Mapping[str, str] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_fastlane(cls)

    def _group_names(self) -> list[str]:
        names = list(self.groups or ())
        # Channels 1.x generic consumers named their groups with a method.
        legacy = getattr(self, "connection_groups", None)
        if callable(legacy):
            names.extend(legacy(**self.scope.get("url_route", {}).get("kwargs", {})))
        return names

    # -- events from the transport --------------------------------------------

    def websocket_connect(self, message: dict[str, Any]) -> None:
        """Join ``groups``, then call ``connect()``."""
        groups = self._group_names()
        if groups:
            if self.channel_layer is None or self.channel_name is None:
                raise ConfigurationError(
                    f"{type(self).__name__}.groups = {groups!r} needs a channel layer; "
                    "configure one (wsbridge.layers.configure) or remove groups"
                )
            for group in groups:
                self.channel_layer.group_add(group, self.channel_name)
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def websocket_receive(self, message: dict[str, Any]) -> None:
        """Call ``receive()`` with the frame's text or bytes."""
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message.get("bytes"))

    def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leave ``groups``, call ``disconnect(code)``, and end the consumer."""
        if self.channel_layer is not None and self.channel_name is not None:
            for group in self._group_names():
                try:
                    self.channel_layer.group_discard(group, self.channel_name)
                except LayerError as exc:
                    # The membership expires with group_expiry; disconnect() must still run.
                    logger.warning("could not leave group %r on disconnect: %s", group, exc)
        self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    # -- to override -----------------------------------------------------------

    def connect(self) -> None:
        """Decide on the handshake: call ``accept()``; raise DenyConnection to refuse."""
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one message from the client."""

    def disconnect(self, code: int) -> None:
        """Clean up after the connection closed with ``code``."""

    # -- to call ---------------------------------------------------------------

    def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Complete the handshake, optionally choosing one of ``scope["subprotocols"]``.

        ``headers`` are extra response headers, as (bytes, bytes) pairs.
        """
        event: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            event["headers"] = list(headers)
        self.base_send(event)

    def send(  # type: ignore[override]  # Channels' signature
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a text or binary message; with ``close`` also close (True or a code)."""
        if text_data is not None:
            self.base_send({"type": "websocket.send", "text": text_data})
        elif bytes_data is not None:
            self.base_send({"type": "websocket.send", "bytes": bytes_data})
        else:
            raise ValueError("send() needs text_data or bytes_data")
        if close:
            self.close(None if close is True else int(close))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection (or refuse the handshake with 403 before ``accept``).

        ``code`` defaults to 1000; use 4000-4999 for application codes.
        """
        event: dict[str, Any] = {"type": "websocket.close"}
        if code is not None and code is not True:
            event["code"] = code
        if reason:
            event["reason"] = reason
        self.base_send(event)


class JsonWebsocketConsumer(WebsocketConsumer):
    """A WebsocketConsumer that speaks JSON text frames.

    Override ``receive_json(content)``; call ``send_json(content)``. Override
    the ``decode_json`` / ``encode_json`` classmethods to change the codec.
    """

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode the text frame and call ``receive_json``; binary frames are an error."""
        if not text_data:
            raise ValueError(
                f"{type(self).__name__} received a frame with no text; it takes JSON text frames"
            )
        self.receive_json(self.decode_json(text_data))

    def receive_json(self, content: Any) -> None:
        """Handle one decoded JSON message."""

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        self.send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
