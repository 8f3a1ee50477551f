"""Several streams over one WebSocket: ``WebsocketDemultiplexer``.

Every frame, both ways, is a JSON envelope, the same one the browser client
(``wsbridge.js``) speaks::

    {"stream": "chat", "payload": {"text": "hi"}}

Each stream is served by an ordinary consumer class, one instance per
connection, that does not know it is multiplexed::

    @router.websocket("ws/")
    class Demultiplexer(WebsocketDemultiplexer):
        consumers = {"chat": ChatConsumer, "ticker": TickerConsumer}

What a stream consumer sends goes out wrapped in its stream's envelope; what
arrives for a stream reaches its ``receive_json`` (or ``receive``). The
socket is accepted when every stream consumer accepts in ``connect()``; one
refusing refuses the handshake (403). A stream consumer closing closes the
socket. Layer messages reach the stream named by their ``"stream"`` key, or
else every stream consumer with a handler for their type.

Channels 1.x demultiplexers port as they are: a ``consumers`` value may be
a 1.x function consumer (``{"notes": NoteBinding.consumer}``, 1.1), called
with a ``message`` whose ``text`` is the payload as JSON and a
``multiplexer`` keyword; and ``mapping = {"notes": "binding.notes"}`` (1.0)
sends each payload, with ``reply_channel`` added, to that channel.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from ..exceptions import StopConsumer, UnknownMessageType
from .consumer import (
    JsonWebsocketConsumer,
    WebsocketConsumer,
    _is_reply,
    get_handler_name,
)
from .message import Channel, Group, Message, _ReplyChannel, accepted_kwargs

__all__ = ["WebsocketDemultiplexer"]

logger = logging.getLogger("wsbridge.consumers")

#: Close code for a frame that is not a valid envelope (RFC 6455 7.4.1: policy violation).
BAD_ENVELOPE_CODE = 1008


class _StreamSend:
    """The ``send`` a stream consumer gets: wraps its events into envelopes."""

    def __init__(self, demux: WebsocketDemultiplexer, stream: str) -> None:
        self.demux = demux
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "websocket.accept":
            self.demux._stream_accepted.add(self.stream)
        elif kind == "websocket.send":
            if event.get("text") is None:
                raise ValueError(
                    f"stream {self.stream!r}: binary frames cannot be multiplexed; send JSON"
                )
            self.demux.send_json(self.demux.envelope(self.stream, _loads(event["text"])))
        elif kind == "websocket.close":
            if self.demux._connecting:
                self.demux._stream_refused.add(self.stream)
            else:
                self.demux.close(event.get("code"), event.get("reason"))
        else:
            self.demux.base_send(event)


def _loads(text: str) -> Any:
    # A stream consumer that sends plain text gets it carried as a JSON string.
    try:
        return json.loads(text)
    except ValueError:
        return text


class WebsocketMultiplexer:
    """What a 1.x function stream consumer gets as ``multiplexer``: sends on its stream."""

    def __init__(self, stream: str, demux: WebsocketDemultiplexer) -> None:
        self.stream = stream
        self.demux = demux

    def send(self, payload: Any) -> None:
        """Send ``payload`` to this socket, on this stream."""
        self.demux.send_json(self.demux.envelope(self.stream, payload))

    def group_send(self, name: str, payload: Any, close: bool = False) -> int:
        """Send ``payload`` on this stream to every socket in group ``name``."""
        return self.demux.group_send(name, self.stream, payload, close=close)


class WebsocketDemultiplexer(JsonWebsocketConsumer):
    """Serve several consumer classes, one per stream, over one JSON WebSocket.

    Set ``consumers = {"stream name": ConsumerClass}`` (a value may also be a
    Channels 1.x function consumer), or the 1.0 ``mapping = {"stream name":
    "channel.name"}``. Override ``connect`` to decide on the handshake
    yourself (call ``connect_streams()`` then ``accept()``).
    """

    consumers: ClassVar[Mapping[str, Any]] = {}
    mapping: ClassVar[Mapping[str, str]] = {}
    stream_key: ClassVar[str] = "stream"
    payload_key: ClassVar[str] = "payload"

    def __init__(self, scope: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(scope, **kwargs)
        if not self.consumers and not self.mapping:
            raise TypeError(f"{type(self).__name__}.consumers maps no stream to a consumer")
        self._connecting = False
        self._stream_accepted: set[str] = set()
        self._stream_refused: set[str] = set()
        self.streams: dict[str, WebsocketConsumer] = {}
        self.function_streams: dict[str, Any] = {}
        for stream, consumer_class in self.consumers.items():
            if not hasattr(consumer_class, "build"):
                if not callable(consumer_class):
                    raise TypeError(
                        f"{type(self).__name__}.consumers[{stream!r}] is not a consumer"
                    )
                self.function_streams[stream] = consumer_class
                continue
            child = consumer_class.build(
                scope,
                send=_StreamSend(self, stream),
                channel_layer=self.channel_layer,
                channel_name=self.channel_name,
            )
            child.stream = stream
            self.streams[stream] = child

    # -- the envelope ----------------------------------------------------------

    @classmethod
    def envelope(cls, stream: str, payload: Any) -> dict[str, Any]:
        """The envelope dict for ``payload`` on ``stream``."""
        return {cls.stream_key: stream, cls.payload_key: payload}

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict[str, Any]:
        """A Channels 1.x reply (``{"text": ...}``) carrying ``payload`` on ``stream``.

        Send it with ``Group(name).send(...)`` or ``Channel(reply).send(...)``.
        """
        return {"text": cls.encode_json(cls.envelope(stream, payload))}

    @classmethod
    def group_send(cls, group: str, stream: str, payload: Any, close: bool = False) -> int:
        """Send ``payload`` on ``stream`` to every socket in ``group`` (Channels 1.x)."""
        content = cls.encode(stream, payload)
        if close:
            content["close"] = True
        return Group(group).send(content)

    # -- connect / disconnect ---------------------------------------------------

    def connect(self) -> None:
        """Accept when every stream consumer accepts; refuse (403) otherwise."""
        if self.connect_streams():
            self.accept()
        else:
            self.close()

    def connect_streams(self) -> bool:
        """Run each stream consumer's connect (joining its groups); True if all accepted."""
        self._connecting = True
        try:
            for stream, child in self.streams.items():
                child.websocket_connect({"type": "websocket.connect"})
                if stream not in self._stream_accepted:
                    self._stream_refused.add(stream)
                if self._stream_refused:
                    return False
        finally:
            self._connecting = False
        return True

    def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Let every stream consumer leave its groups and run ``disconnect``, then end."""
        for child in self.streams.values():
            try:
                child.websocket_disconnect(message)
            except StopConsumer:
                pass
        super().websocket_disconnect(message)

    # -- frames from the client -------------------------------------------------

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not text_data:
            self._bad_envelope("a binary or empty frame")
            return
        try:
            content = self.decode_json(text_data)
        except ValueError:
            self._bad_envelope("a frame that is not JSON")
            return
        self.receive_json(content)

    def receive_json(self, content: Any) -> None:
        """Hand the payload to its stream's consumer."""
        if not isinstance(content, dict) or self.payload_key not in content:
            self._bad_envelope(f"no {self.stream_key!r}/{self.payload_key!r} envelope")
            return
        stream = content.get(self.stream_key)
        payload = content[self.payload_key]
        if isinstance(stream, str) and (stream in self.function_streams or stream in self.mapping):
            self._receive_v1(stream, payload)
            return
        child = self.streams.get(stream) if isinstance(stream, str) else None
        if child is None:
            self._bad_envelope(f"unknown stream {stream!r}")
            return
        if isinstance(child, JsonWebsocketConsumer):
            child.receive_json(payload)
        else:
            child.receive(text_data=payload if isinstance(payload, str) else json.dumps(payload))

    def _receive_v1(self, stream: str, payload: Any) -> None:
        """A Channels 1.x stream: call its function consumer, or send to its mapped channel."""
        if not isinstance(payload, dict):
            self._bad_envelope(f"a payload on stream {stream!r} that is not an object")
            return
        if stream in self.mapping:
            Channel(self.mapping[stream], channel_layer=self.channel_layer).send(
                {**payload, "reply_channel": self.channel_name}
            )
            return
        func = self.function_streams[stream]
        reply = _ReplyChannel(self.channel_name or "", self.base_send, self.channel_layer)
        content = {
            "reply_channel": self.channel_name,
            "path": self.scope.get("path"),
            "text": self.encode_json(payload),
        }
        message = Message(content, "websocket.receive", self.channel_layer, reply, self.scope)
        extra = accepted_kwargs(func)(
            {
                "multiplexer": WebsocketMultiplexer(stream, self),
                **self.scope.get("url_route", {}).get("kwargs", {}),
            }
        )
        func(message, **extra)

    def _bad_envelope(self, what: str) -> None:
        # The peer's mistake: one warning line, no traceback, this socket only.
        logger.warning(
            "%s on %s got %s; closing with %d (streams: %s)",
            type(self).__name__,
            self.scope.get("path"),
            what,
            BAD_ENVELOPE_CODE,
            ", ".join(self.streams),
        )
        # A close reason is at most 123 bytes of UTF-8 (RFC 6455 5.5).
        self.close(BAD_ENVELOPE_CODE, what.encode()[:120].decode(errors="ignore"))

    # -- layer messages -----------------------------------------------------------

    def dispatch(self, message: dict[str, Any]) -> None:
        """Socket events and own handlers here; other types to the stream consumers."""
        if "type" not in message and _is_reply(message):
            self.send_reply(message)
            return
        name = get_handler_name(message)
        if message["type"].startswith("websocket.") or callable(getattr(self, name, None)):
            super().dispatch(message)
            return
        stream = message.get(self.stream_key)
        if isinstance(stream, str) and stream in self.streams:
            self.streams[stream].dispatch(message)
            return
        targets = [c for c in self.streams.values() if callable(getattr(c, name, None))]
        if not targets:
            raise UnknownMessageType(
                f"{type(self).__name__}: no stream consumer handles message type "
                f"{message['type']!r} (define {name}(self, event) on one of "
                f"{', '.join(type(c).__name__ for c in self.streams.values())})"
            )
        for child in targets:
            child.dispatch(message)
