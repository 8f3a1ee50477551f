"""Class consumers: ``WebsocketConsumer`` and ``JsonWebsocketConsumer``.

A consumer instance serves one connection. Every event for it (socket
events and layer messages sent to ``self.channel_name`` or its groups)
arrives through :meth:`BaseConsumer.dispatch`, in order, one at a time, in a
greenlet: ``{"type": "chat.message"}`` calls ``chat_message(event)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from ..exceptions import DenyConnection, StopConsumer, UnknownMessageType
from ..layers.base import BaseChannelLayer

__all__ = [
    "BaseConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
    "JsonWebsocketConsumer",
    "get_handler_name",
    "Send",
]

logger = logging.getLogger("wsbridge.consumers")

Send = Callable[[dict[str, Any]], None]


def get_handler_name(message: dict[str, Any]) -> str:
    """Return the method name for a message: ``"chat.message"`` -> ``"chat_message"``.

    Raises:
        UnknownMessageType: no ``type``, a non-str type, or a name starting
            with ``_`` (private methods are never reachable from messages).
    """
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise UnknownMessageType(f"message has no 'type' (keys: {sorted(message)})")
    name = kind.replace(".", "_")
    if name.startswith("_"):
        raise UnknownMessageType(f"message type {kind!r} is refused: it starts with '_'")
    return name


class BaseConsumer:
    """Dispatches each message to the method its type names.

    Built by the server for each connection; ``scope``, ``channel_name``
    and ``channel_layer`` are ready when the first handler runs.
    """

    #: The scope type this consumer serves: "websocket", "http" or "channel".
    scope_type: ClassVar[str] = "websocket"

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
        """Make the instance for one connection (the router calls this)."""
        return cls(scope, **kwargs)

    def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler for ``message``'s type.

        A message without ``type`` is a Channels 1.x reply (``{"text": ...}``,
        ``{"bytes": ...}``, ``{"close": ...}``, ``{"accept": True}``) and goes
        straight to the client.
        """
        if "type" not in message and _is_reply(message):
            self.send_reply(message)
            return
        name = get_handler_name(message)
        handler = getattr(self, name, None)
        if handler is None or not callable(handler):
            raise UnknownMessageType(
                f"{type(self).__name__} has no handler {name}() for message type "
                f"{message['type']!r}"
            )
        handler(message)

    def send_reply(self, content: dict[str, Any]) -> None:
        """Forward a Channels 1.x reply dict to the client."""
        raise UnknownMessageType(f"{type(self).__name__} cannot send a reply to a client")


SyncConsumer = BaseConsumer

_REPLY_KEYS = frozenset(("text", "bytes", "close", "accept"))


def _is_reply(message: dict[str, Any]) -> bool:
    return bool(message) and set(message) <= _REPLY_KEYS | {"reply_channel", "order"}


def websocket_reply_events(content: dict[str, Any]) -> list[dict[str, Any]]:
    """Translate a Channels 1.x reply dict into websocket.* events, in order."""
    events: list[dict[str, Any]] = []
    if content.get("accept"):
        events.append({"type": "websocket.accept"})
    if content.get("text") is not None:
        events.append({"type": "websocket.send", "text": content["text"]})
    if content.get("bytes") is not None:
        events.append({"type": "websocket.send", "bytes": content["bytes"]})
    close = content.get("close")
    if close is not None and close is not False:
        code = 1000 if close is True else int(close)
        events.append({"type": "websocket.close", "code": code})
    return events


class WebsocketConsumer(BaseConsumer):
    """A WebSocket consumer with Django Channels' synchronous API.

    Override ``connect``, ``receive`` and ``disconnect``; call ``accept``,
    ``send`` and ``close``. Set ``groups`` to join groups on connect (and
    leave them on disconnect).
    """

    scope_type: ClassVar[str] = "websocket"
    groups: ClassVar[Iterable[str] | None] = None

    # -- events from the transport --------------------------------------------

    def websocket_connect(self, message: dict[str, Any]) -> None:
        for group in self.groups or ():
            self.channel_layer.group_add(group, self.channel_name)  # type: ignore[union-attr]
        try:
            self.connect()
        except DenyConnection:
            self.close()

    def websocket_receive(self, message: dict[str, Any]) -> None:
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message.get("bytes"))

    def websocket_disconnect(self, message: dict[str, Any]) -> None:
        for group in self.groups or ():
            self.channel_layer.group_discard(group, self.channel_name)  # type: ignore[union-attr]
        try:
            self.disconnect(message.get("code", 1000))
        finally:
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

    def accept(self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None) -> None:
        """Complete the handshake, optionally choosing one of the client's subprotocols."""
        event: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            event["headers"] = list(headers)
        self.base_send(event)

    def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False) -> None:
        """Send a text or binary message; with ``close`` also close (True or a code)."""
        if text_data is not None:
            self.base_send({"type": "websocket.send", "text": text_data})
        elif bytes_data is not None:
            self.base_send({"type": "websocket.send", "bytes": bytes_data})
        else:
            raise ValueError("send() needs text_data or bytes_data")
        if close:
            self.close(close if (isinstance(close, int) and not isinstance(close, bool)) else None)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection (or refuse the handshake with 403 before ``accept``)."""
        event: dict[str, Any] = {"type": "websocket.close"}
        if code is not None and code is not True:
            event["code"] = code
        if reason:
            event["reason"] = reason
        self.base_send(event)

    def send_reply(self, content: dict[str, Any]) -> None:
        for event in websocket_reply_events(content):
            self.base_send(event)


class JsonWebsocketConsumer(WebsocketConsumer):
    """A WebsocketConsumer that speaks JSON text frames.

    Override ``receive_json(content)``; call ``send_json(content)``. Override
    ``decode_json`` / ``encode_json`` to change the codec.
    """

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            raise ValueError("JsonWebsocketConsumer received a binary frame; it takes JSON text")
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
        return json.dumps(content, separators=(",", ":"))
