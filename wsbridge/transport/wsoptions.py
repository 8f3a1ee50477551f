"""The WebSocket transport's options and the socket hand-over record.

Kept apart from ``wsbridge.transport.websocket`` (which re-exports
both) so that configuration code can import them without the transport.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from ..protocol.closecodes import CloseCode

__all__ = [
    "WebSocketOptions",
    "Handover",
    "SLOW_CLIENT_CLOSE_CODE",
    "GOING_AWAY",
    "PING_TIMEOUT_CLOSE_CODE",
    "CONTROL_FLOOD_CLOSE_CODE",
]

# What the WebSocket transport closes with, by situation (CloseCode members).
#: Sent to a client that does not read fast enough (its outbound queue is full):
#: 1013, "try again later", so clients reconnect after a delay.
SLOW_CLIENT_CLOSE_CODE = CloseCode.TRY_AGAIN_LATER
#: Sent to a client over ``control_frame_rate`` (a PING/PONG flood), 1008.
CONTROL_FLOOD_CLOSE_CODE = CloseCode.POLICY_VIOLATION
#: Sent on server shutdown, 1001.
GOING_AWAY = CloseCode.GOING_AWAY
#: Sent when the peer does not answer a keepalive ping in time, 1011.
PING_TIMEOUT_CLOSE_CODE = CloseCode.INTERNAL_ERROR

_MiB = 1024 * 1024


@dataclass(frozen=True)
class WebSocketOptions:
    """Limits and knobs of the WebSocket transport; every limit is on by default.

    Attributes:
        max_message_size: largest incoming message in bytes, counted after
            decompression and checked while the frames arrive; bigger closes
            the connection with 1009. None disables the limit (do not).
        max_fragment_size: largest single incoming frame, or None.
        handshake_timeout: seconds the consumer has to accept or refuse in
            ``connect()``; past it the handshake is answered with 503.
        ping_interval: seconds of silence from the client before the server
            pings it; None disables keepalive pings.
        ping_timeout: seconds to wait for the pong; past it the connection is
            closed with 1011 and the socket dropped.
        close_timeout: seconds to wait for the client's part of the closing
            handshake before the socket is aborted.
        compression: offer permessage-deflate (RFC 7692) when the client asks.
        server_max_window_bits: deflate window for what the server sends
            (9-15); memory per connection grows with ``2**bits``.
        client_max_window_bits: window the client is asked to use (8-15), when
            it supports the parameter; bounds inflate memory.
        compression_mem_level: zlib ``memLevel`` for the server's deflater (1-9).
        compression_context_takeover: keep each side's zlib context between
            messages (better ratio for many small similar messages, but about
            40 KiB of zlib state per connection, idle or not). Off by default:
            both sides start each message afresh and an idle connection holds
            no zlib state at all.
        max_outbound_bytes: bytes queued for a client that has not read them
            yet; past it the client is closed with :data:`SLOW_CLIENT_CLOSE_CODE`
            and its socket aborted. One message larger than this is still sent
            when nothing else is queued.
        read_size: bytes asked from the socket per read.
        control_frame_rate: PING and PONG frames a client may send per second
            on average (after a burst of ``control_frame_burst``); past it the
            connection is closed with :data:`CONTROL_FLOOD_CLOSE_CODE` (1008).
            None disables the limit.
        control_frame_burst: control frames a client may send at once.
        slow_close_timeout: seconds given to the close frame of a client that
            does not read (after what was already being written to it) before
            the socket is aborted.
    """

    max_message_size: int | None = 1 * _MiB
    max_fragment_size: int | None = None
    handshake_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    compression: bool = True
    server_max_window_bits: int = 12
    client_max_window_bits: int | None = 12
    compression_mem_level: int = 5
    compression_context_takeover: bool = False
    max_outbound_bytes: int = 4 * _MiB
    read_size: int = 64 * 1024
    control_frame_rate: float | None = 50.0
    control_frame_burst: int = 100
    slow_close_timeout: float = 1.0

    def __post_init__(self) -> None:
        if not 9 <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be between 9 and 15")
        if self.client_max_window_bits is not None and not 8 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be between 8 and 15 (or None)")
        if not 1 <= self.compression_mem_level <= 9:
            raise ValueError("compression_mem_level must be between 1 and 9")
        for name in ("handshake_timeout", "ping_timeout", "close_timeout", "slow_close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive or None")
        if self.max_outbound_bytes <= 0 or self.read_size <= 0:
            raise ValueError("max_outbound_bytes and read_size must be positive")
        if self.control_frame_rate is not None and self.control_frame_rate <= 0:
            raise ValueError("control_frame_rate must be positive or None")
        if self.control_frame_burst < 1:
            raise ValueError("control_frame_burst must be at least 1")

    def extensions(self) -> list[ServerPerMessageDeflateFactory]:
        """The extension factories to offer (empty when compression is off)."""
        return list(self._extension_factories)

    @functools.cached_property
    def _negotiators(self) -> weakref.WeakKeyDictionary[Any, Any]:
        # The handshake negotiators made with these options, one per gevent hub
        # (ws_handshake.shared_negotiator fills it); a thread's hub gone, its goes.
        return weakref.WeakKeyDictionary()

    @functools.cached_property
    def _extension_factories(self) -> tuple[ServerPerMessageDeflateFactory, ...]:
        # Built once per options object: a factory is only its settings (each handshake
        # gets extension objects of its own from it), and building it cost a few µs.
        if not self.compression:
            return ()
        factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=not self.compression_context_takeover,
            client_no_context_takeover=not self.compression_context_takeover,
            server_max_window_bits=self.server_max_window_bits,
            client_max_window_bits=self.client_max_window_bits,
            compress_settings={"memLevel": self.compression_mem_level},
        )
        return (factory,)


@dataclass(eq=False)
class Handover:
    """A client socket that a WSGI server handed over to wsbridge.

    Built by the server adapters (``transport.server``, ``transport.gunicorn``).

    Attributes:
        sock: the connected gevent socket.
        finish: called once the WebSocket is over with ``(status, bytes_sent)``;
            returns what the WSGI app must return to the server so that it
            writes nothing more and reads no further request.
        preread: bytes the server already read past the request head.
        server: a name for logs ("wsbridge", "gunicorn", "gevent-websocket"...).
        upgraded: the server already answered the handshake with 101 itself
            (gevent-websocket does); the connection starts OPEN.
    """

    sock: Any
    finish: Callable[[int, int], Any]
    preread: bytes = b""
    server: str = "unknown"
    upgraded: bool = False
