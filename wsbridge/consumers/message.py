"""The Channels 1.x programming model: ``Message``, ``Channel``, ``Group``.

Function consumers take one ``message``::

    @router.on("websocket.receive", path=r"^/echo/$")
    def echo(message):
        message.reply_channel.send({"text": message.content["text"]})

``Group("chat").send({"text": "hi"})`` reaches every member socket as a text
frame; ``Channel("thumbnails").send({"id": 1})`` runs the background
consumer registered with ``@router.channel("thumbnails")``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from ..exceptions import StopConsumer
from ..layers import DEFAULT_ALIAS, get_channel_layer
from ..layers.base import BaseChannelLayer, validate_channel_name, validate_group_name
from .consumer import BaseConsumer, websocket_reply_events

__all__ = ["Message", "Channel", "Group", "FunctionConsumer", "enforce_ordering"]


class Channel:
    """A named channel; ``send`` puts a message on it through the layer.

    Args:
        name: the channel name.
        alias: which configured layer to use.
        channel_layer: a layer to use instead of the alias's.
    """

    def __init__(
        self,
        name: str,
        alias: str = DEFAULT_ALIAS,
        channel_layer: BaseChannelLayer | None = None,
    ) -> None:
        self.name = validate_channel_name(str(name))
        self.alias = alias
        self._layer = channel_layer

    @property
    def channel_layer(self) -> BaseChannelLayer:
        """The layer this channel sends through."""
        return self._layer if self._layer is not None else get_channel_layer(self.alias)

    def send(
        self, content: dict[str, Any], immediately: bool = False, delay: float | None = None
    ) -> None:
        """Send ``content`` (a dict of msgpack types) to this channel.

        ``immediately`` is accepted for Channels 1.x compatibility; sends
        are always immediate. ``delay`` delivers it that many seconds later
        (a layer feature: the memory layer holds it in this process, Redis
        in Redis).

        Raises:
            ChannelFull: the channel is at capacity; the message was not sent.
            TypeError: ``content`` holds something that is not a msgpack type.
        """
        self.channel_layer.send(self.name, content, delay=delay)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Channel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class _ReplyChannel(Channel):
    """``message.reply_channel``: sends go straight to the connection, in order."""

    def __init__(
        self, name: str, emit: Callable[[dict[str, Any]], None], layer: BaseChannelLayer | None
    ) -> None:
        # No validation: without a layer a connection has no channel name.
        self.name = name
        self.alias = DEFAULT_ALIAS
        self._layer = layer
        self._emit = emit

    def send(
        self, content: dict[str, Any], immediately: bool = False, delay: float | None = None
    ) -> None:
        """Send a reply (``{"accept": True}``, ``{"text": ...}``, ``{"close": True}``)."""
        if delay:
            super().send(content, delay=delay)
            return
        for event in websocket_reply_events(content):
            self._emit(event)


class Group:
    """A named group of channels (Channels 1.x API)."""

    def __init__(
        self,
        name: str,
        alias: str = DEFAULT_ALIAS,
        channel_layer: BaseChannelLayer | None = None,
    ) -> None:
        self.name = validate_group_name(name)
        self.alias = alias
        self._layer = channel_layer

    @property
    def channel_layer(self) -> BaseChannelLayer:
        return self._layer if self._layer is not None else get_channel_layer(self.alias)

    def add(self, channel: Channel | str) -> None:
        """Add a channel (or ``message.reply_channel``) to the group."""
        self.channel_layer.group_add(self.name, str(channel))

    def discard(self, channel: Channel | str) -> None:
        """Remove a channel from the group; no error when it is not a member."""
        self.channel_layer.group_discard(self.name, str(channel))

    def send(self, content: dict[str, Any], immediately: bool = False) -> int:
        """Send ``content`` to every member; returns how many were skipped as full."""
        return self.channel_layer.group_send(self.name, content)

    def __repr__(self) -> str:
        return f"Group({self.name!r})"


class Message:
    """What a Channels 1.x function consumer receives.

    Attributes:
        content: the message dict.
        channel: the Channel it arrived on.
        channel_layer: the layer it came through.
        reply_channel: where replies go (the client, for socket events).
    """

    def __init__(
        self,
        content: dict[str, Any],
        channel_name: str,
        channel_layer: BaseChannelLayer | None,
        reply_channel: Channel | None = None,
        scope: dict[str, Any] | None = None,
    ) -> None:
        self.content = content
        self.channel = Channel(channel_name, channel_layer=channel_layer)
        self.channel_layer = channel_layer
        self.scope = scope or {}
        if reply_channel is None and content.get("reply_channel"):
            reply_channel = Channel(content["reply_channel"], channel_layer=channel_layer)
        self.reply_channel = reply_channel

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def __repr__(self) -> str:
        return f"<Message channel={self.channel.name!r} keys={sorted(self.content)}>"


def accepted_kwargs(func: Callable[..., Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A filter keeping the keyword arguments ``func`` can take (all, with ``**kwargs``)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins, some C callables
        return lambda kwargs: {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return lambda kwargs: {k: v for k, v in kwargs.items() if k in names}


class FunctionConsumer(BaseConsumer):
    """Adapts Channels 1.x function consumers for one path to a consumer class.

    ``handlers`` maps ``websocket.connect`` / ``receive`` / ``disconnect`` to
    functions. With no connect handler the connection is accepted; a connect
    handler that neither accepts nor closes refuses the handshake (403).
    Named groups of the path regex are passed to the functions as keyword
    arguments, as Channels 1.x did (those each function accepts).
    """

    scope_type: ClassVar[str] = "websocket"
    handlers: ClassVar[dict[str, Callable[..., Any]]] = {}
    path_regex: ClassVar[str] = ".*"
    _kwargs_filters: ClassVar[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    @classmethod
    def for_path(cls, path_regex: str) -> type[FunctionConsumer]:
        """A new class holding the function consumers of one path."""
        return type(
            "FunctionConsumer",
            (cls,),
            {
                "handlers": {},
                "_kwargs_filters": {},
                "path_regex": path_regex,
                "__module__": cls.__module__,
            },
        )

    @classmethod
    def set_handler(cls, event_type: str, func: Callable[..., Any]) -> None:
        """Register ``func`` for ``event_type`` on this path."""
        cls.handlers[event_type] = func
        cls._kwargs_filters[event_type] = accepted_kwargs(func)

    def __init__(self, scope: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(scope, **kwargs)
        self._order = 0
        self.reply_channel = _ReplyChannel(
            self.channel_name or "", self.base_send, self.channel_layer
        )

    def _message(self, event: dict[str, Any]) -> Message:
        content: dict[str, Any] = {
            "reply_channel": self.channel_name,
            "path": self.scope.get("path"),
            "order": self._order,
        }
        self._order += 1
        if event["type"] == "websocket.connect":
            content.update(
                headers=[list(pair) for pair in self.scope.get("headers", [])],
                query_string=self.scope.get("query_string", b""),
                client=self.scope.get("client"),
                server=self.scope.get("server"),
            )
        for key in ("text", "bytes", "code"):
            if event.get(key) is not None:
                content[key] = event[key]
        return Message(content, event["type"], self.channel_layer, self.reply_channel, self.scope)

    def _call(self, event: dict[str, Any]) -> bool:
        kind = event["type"]
        handler = self.handlers.get(kind)
        if handler is None:
            return False
        url_kwargs = self.scope.get("url_route", {}).get("kwargs", {})
        handler(self._message(event), **self._kwargs_filters[kind](url_kwargs))
        return True

    def websocket_connect(self, event: dict[str, Any]) -> None:
        if not self._call(event):
            self.base_send({"type": "websocket.accept"})

    def websocket_receive(self, event: dict[str, Any]) -> None:
        self._call(event)

    def websocket_disconnect(self, event: dict[str, Any]) -> None:
        try:
            self._call(event)
        finally:
            raise StopConsumer()


def enforce_ordering(func: Callable[..., Any] | None = None, *, slight: bool = False) -> Any:
    """Channels 1.x ``@enforce_ordering``: kept so code ports; returns the consumer unchanged.

    wsbridge delivers a connection's messages to its handlers one at a time,
    in arrival order (strict ordering, always), so there is nothing left to
    enforce. Works bare (``@enforce_ordering``) and called
    (``@enforce_ordering(slight=True)``). The one implementation: the Django
    app's ``wsbridge_django.decorators.enforce_ordering`` is this function.
    """
    if func is None:
        return lambda f: f
    return func
