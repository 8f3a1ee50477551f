"""The WebSocket transport's two shortcuts on the way out: direct frames, direct writes.

Both exist for fan-out, where one message goes to thousands of sockets and
any fixed cost per socket adds up (docs/topics/performance.rst).

* :func:`frame_header`: a server's data frame is a 2, 4 or 10 byte header
  and the payload as is (RFC 6455 section 5.2: FIN, opcode, 7/16/64-bit
  length, never masked by a server). The transport writes that directly
  when no extension was negotiated; anything else (permessage-deflate,
  control frames, the closing handshake) still goes through websockets'
  ``ServerProtocol``.
* :func:`raw_sender`: gevent's socket keeps the OS socket in non-blocking
  mode underneath; a ``send`` on that one writes what the kernel takes now
  and never waits, so a transport with nothing queued can write at once
  instead of spawning a writer greenlet.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import gevent.socket

__all__ = ["OP_TEXT", "OP_BINARY", "frame_header", "raw_sender", "text_frame"]

#: First header byte of an unfragmented text / binary frame: FIN set, RSV clear.
OP_TEXT = 0x81
OP_BINARY = 0x82

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def frame_header(first: int, size: int) -> bytes:
    """The header of an unmasked frame carrying ``size`` payload bytes (RFC 6455 5.2).

    Args:
        first: the first byte, :data:`OP_TEXT` or :data:`OP_BINARY`.
        size: payload length in bytes; the 7, 16 or 64-bit form is chosen
            as the RFC requires (the shortest that fits).

    Returns:
        The bytes to write right before the payload.
    """
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return _LEN16.pack(first, 126, size)
    return _LEN64.pack(first, 127, size)


#: The last text framed and its frame: a group message reaches every member with the
#: same ``str`` object, so a fan-out to N sockets encodes and frames it once, not N
#: times. Keyed by identity (the entry holds the str, so no other object can share
#: its address while it is there); one tuple, replaced in one store (thread-safe).
_last_text: tuple[str | None, bytes] = (None, b"")


def text_frame(text: str) -> bytes:
    """The whole unmasked text frame for ``text`` (header and UTF-8 payload)."""
    global _last_text
    last = _last_text
    if last[0] is text:
        return last[1]
    payload = text.encode("utf-8")
    frame = frame_header(OP_TEXT, len(payload)) + payload
    _last_text = (text, frame)
    return frame


def raw_sender(sock: Any) -> Callable[[bytes], int] | None:
    """A ``send`` that never waits, for a plain gevent TCP socket; None otherwise.

    The callable returns how many bytes the kernel took (possibly fewer than
    given) and raises :class:`BlockingIOError` when it took none, or another
    :class:`OSError` when the connection is gone. The caller must queue the
    rest for a writer that waits for the socket to be writable.

    Anything but gevent's own socket class (TLS sockets, test doubles,
    another server's wrapper) gets None: writing under a TLS socket would
    bypass the encryption, so only the exact class qualifies.
    """
    if type(sock) is not gevent.socket.socket:
        return None
    raw = getattr(sock, "_sock", None)  # gevent keeps it non-blocking
    if raw is None or raw.gettimeout() != 0.0:
        return None
    send: Callable[[bytes], int] = raw.send
    return send
