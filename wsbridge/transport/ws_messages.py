"""Data frames in, whole messages out: fragments joined, text decoded as it arrives.

Sans-I/O: the transport feeds it the TEXT, BINARY and CONT frames the
protocol parsed (RFC 6455 section 5.4: a message is one frame with FIN, or
a first frame and continuations up to one with FIN) and delivers the
``websocket.receive`` event it returns. Text is decoded frame by frame, so
invalid UTF-8 fails as soon as the bad byte arrives (Autobahn 6.x); the
transport then closes with 1007.
"""

from __future__ import annotations

import codecs
from typing import Any

from websockets.frames import Frame, Opcode

__all__ = ["MessageAssembler"]


class MessageAssembler:
    """Joins one connection's data frames into messages."""

    __slots__ = ("_fragments", "_decoder", "_text")

    def __init__(self) -> None:
        self._fragments: list[Any] | None = None
        self._decoder: Any = None
        self._text = False

    def feed(self, frame: Frame) -> dict[str, Any] | None:
        """The ``websocket.receive`` event ``frame`` completes, or None (more to come).

        Raises:
            UnicodeDecodeError: a text message is not valid UTF-8 (the
                partial message is dropped).
        """
        if frame.opcode is Opcode.CONT:
            if self._fragments is None:
                return None  # the protocol has already failed the connection
            return self._add_fragment(frame)
        self._text = frame.opcode is Opcode.TEXT
        self._fragments = None
        self._decoder = None
        if frame.fin:
            if self._text:
                return {"type": "websocket.receive", "text": self._decode(bytes(frame.data))}
            return {"type": "websocket.receive", "bytes": bytes(frame.data)}
        self._fragments = []
        if self._text:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        return self._add_fragment(frame)

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self._fragments = self._decoder = None
            raise

    def _add_fragment(self, frame: Frame) -> dict[str, Any] | None:
        assert self._fragments is not None  # feed() started a message
        if self._decoder is not None:
            try:
                self._fragments.append(self._decoder.decode(frame.data, frame.fin))
            except UnicodeDecodeError:
                self._fragments = self._decoder = None
                raise
        else:
            self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return None
        parts, self._fragments, self._decoder = self._fragments, None, None
        if self._text:
            return {"type": "websocket.receive", "text": "".join(parts)}
        return {"type": "websocket.receive", "bytes": b"".join(parts)}
