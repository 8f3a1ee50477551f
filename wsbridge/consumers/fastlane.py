"""Fastlane: layer messages a WebSocket consumer forwards as they are, without a handler.

Most group messages of a chat or a live feed end in a handler that only
forwards one key to the client (the Channels tutorial's ``chat_message``
sends ``event["text"]``). A consumer can say so instead of writing it::

    class ChatConsumer(WebsocketConsumer):
        groups = ["lobby"]
        fastlane = {"chat.message": "text"}  # send event["text"] as it is

A message of a fastlane type then goes to the socket as a text frame (a
``str`` value) or a binary one (``bytes``). When nothing else of the
connection is queued or running, it is written at once by whoever delivered
it (the layer's reader, the sender of a memory-layer ``group_send``), with no
mailbox, no pump turn and no handler call: the per-delivery cost of a
fan-out is what the socket write costs. Otherwise, and whenever the
connection needs more than a write (a history group stamping positions, a
slow-client policy holding frames, a handshake not yet answered), it goes
through the mailbox in order, as any message, and is forwarded there.
Either way the order of everything the connection sends is kept.

The name is Phoenix's, whose channels send broadcasts on a fastlane unless
the channel intercepts them. A type on the fastlane has no handler: a
consumer that declares one for it is refused when the class is made
(``TypeError``), so the same message never takes two different paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_fastlane", "frame_of", "send_event"]


def check_fastlane(cls: type) -> None:
    """Check ``cls.fastlane`` (a class's own or inherited) when the class is made.

    Raises:
        TypeError: not a mapping of message type to key, or a type with a handler too.
    """
    lane = getattr(cls, "fastlane", None)
    if lane is None:
        return
    if not isinstance(lane, Mapping):
        raise TypeError(
            f"{cls.__name__}.fastlane must map message types to the key to send, "
            f'e.g. {{"chat.message": "text"}}, not {type(lane).__name__}'
        )
    for kind, key in lane.items():
        if not isinstance(kind, str) or not kind or kind.startswith(("_", "websocket.")):
            raise TypeError(f"{cls.__name__}.fastlane: {kind!r} is not a layer message type")
        if not isinstance(key, str) or not key:
            raise TypeError(f"{cls.__name__}.fastlane[{kind!r}] must name a key, not {key!r}")
        handler = kind.replace(".", "_")
        if callable(getattr(cls, handler, None)):
            raise TypeError(
                f"{cls.__name__} has a fastlane for {kind!r} and a handler {handler}(): "
                "a fastlane message is sent as it is, without a handler; drop one of them"
            )


def frame_of(message: dict[str, Any], key: str) -> tuple[str | None, bytes | None] | None:
    """``(text, None)`` or ``(None, data)`` for ``message[key]``; None if it is neither."""
    value = message.get(key)
    if type(value) is str:
        return value, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None, bytes(value)
    return None


def send_event(message: dict[str, Any], key: str) -> dict[str, Any]:
    """The ``websocket.send`` event forwarding ``message[key]`` (the in-order path).

    Raises:
        TypeError: the key is missing or holds neither text nor bytes (a bug in
            the sender, handled as a handler that raised: logged, closed with 1011).
    """
    frame = frame_of(message, key)
    if frame is None:
        raise TypeError(
            f"fastlane message {message.get('type')!r} has no text or bytes under {key!r}"
        )
    text, data = frame
    if text is not None:
        return {"type": "websocket.send", "text": text}
    return {"type": "websocket.send", "bytes": data}
