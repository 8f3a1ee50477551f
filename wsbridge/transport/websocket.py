"""WebSocket over gevent: the ``websockets`` sans-I/O ServerProtocol on a socket.

:class:`websockets.server.ServerProtocol` parses every frame (masking,
fragmentation rules, control frames, close codes, permessage-deflate, the
size limit) and writes every frame but one kind: a data frame on a
connection without extensions is a header and the payload (RFC 6455
section 5.2, :mod:`.wsframes`), written here while the protocol is OPEN and
has nothing of its own waiting. Sending a data frame changes no protocol
state, so the two stay consistent; control frames and the closing handshake
always go through the protocol. This module moves bytes between the
protocol and a gevent socket and turns frames into consumer events.

The read loop feeds the protocol at most ``_FEED_SLICE`` bytes at a time
and yields to the hub after a bounded amount of work
(:class:`~wsbridge.transport.limits.InboundBudget`), whatever the frames
are: control frames never pass through the consumer's mailbox (whose
backpressure paces data messages), so without this a PONG flood would keep
the reader running and freeze every other connection of the process.

One connection costs one greenlet: the WSGI request greenlet that handed
the socket over becomes the reader. A write with nothing queued before it
goes straight to the kernel (a non-blocking ``send``); what the kernel does
not take goes to a bounded outbound queue drained by a writer greenlet that
exists only while bytes are waiting. Keepalive pings and the closing
timeout are hub timers, not greenlets.

The protocol object is only touched under ``self._lock`` and no
application code ever runs under it (STYLE rule 2): the reader feeds data,
collects events and queues writes under the lock, then releases it before
pushing messages into the consumer's mailbox.

Close codes chosen by wsbridge (RFC 6455 section 7.4.1):

* 1009 message too big (``max_message_size``, checked while reading and after
  decompression), 1007 invalid UTF-8 in a text message, 1002 protocol error;
* 1011 keepalive ping not answered within ``ping_timeout``, or the consumer
  crashed;
* :data:`SLOW_CLIENT_CLOSE_CODE` (1013, try again later) when a client does
  not read and its outbound queue passes ``max_outbound_bytes``: what was
  queued is dropped (but the frame being written), the close frame is
  written with a ``slow_close_timeout`` deadline, then the socket is
  aborted (RST), so memory never grows without bound;
* :data:`CONTROL_FLOOD_CLOSE_CODE` (1008, policy violation) when a client
  sends PING/PONG frames faster than ``control_frame_rate``;
* 1001 going away when the server shuts down.
"""

from __future__ import annotations

import codecs
import logging
import os
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.server import ServerProtocol

from ..consumers.runner import Connection
from ..identity import BEARER_SUBPROTOCOL
from ..layers.base import BaseChannelLayer
from ..policies import active as policies_active
from .limits import InboundBudget, refused
from .wsframes import OP_BINARY, OP_TEXT, frame_header, raw_sender
from .wsoptions import (
    CONTROL_FLOOD_CLOSE_CODE,
    GOING_AWAY,
    PING_TIMEOUT_CLOSE_CODE,
    SLOW_CLIENT_CLOSE_CODE,
    Handover,
    WebSocketOptions,
)

__all__ = [
    "WebSocketOptions",
    "Handover",
    "WebSocketTransport",
    "serve_websocket",
    "active_connections",
    "close_all",
    "SLOW_CLIENT_CLOSE_CODE",
    "GOING_AWAY",
]

logger = logging.getLogger("wsbridge.websocket")

#: Bytes fed to the protocol at once: a slice of the smallest frames (6 bytes
#: each) costs a few milliseconds to parse before the budget is checked.
_FEED_SLICE = 8 * 1024


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every open/close at INFO; one line per connection is debug here."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


class _Protocol(ServerProtocol):
    """ServerProtocol that lets a Close frame end an unfinished fragmented message.

    RFC 6455 section 5.4 allows control frames between fragments; a Close
    there means the peer is leaving, so the closing handshake completes
    normally (echoing its code) and the partial message is dropped, where
    websockets would fail the connection with 1002 (Autobahn case 7.1.5).
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None
        super().recv_frame(frame)


_PROTOCOL_LOGGER = _QuietLogger(logging.getLogger("wsbridge.websocket.protocol"), {})

# Every open transport, for a graceful shutdown (weak: no bookkeeping on close).
_ACTIVE: weakref.WeakSet[WebSocketTransport] = weakref.WeakSet()


def active_connections() -> list[WebSocketTransport]:
    """The WebSocket connections open in this process right now."""
    return list(_ACTIVE)


def close_all(code: int = GOING_AWAY, reason: str = "server shutting down") -> int:
    """Start closing every open WebSocket with ``code``; returns how many.

    Each connection then finishes its closing handshake (bounded by its
    ``close_timeout``); wait for them with :func:`active_connections`.
    """
    transports = active_connections()
    for transport in transports:
        transport.close(code, reason)
    return len(transports)


def _request_from_environ(environ: dict[str, Any]) -> Request:
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = str(value)
    path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
    query = environ.get("QUERY_STRING")
    if query and "?" not in path:
        path = f"{path}?{query}"
    return Request(
        path=str(path),
        headers=headers,
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        protocol=str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).upper(),
    )


class WebSocketTransport:
    """One WebSocket connection: a socket, a ServerProtocol and a consumer Connection.

    Build it with :func:`serve_websocket`; it runs in the calling greenlet.
    """

    __slots__ = (
        "sock",
        "options",
        "protocol",
        "scope",
        "conn",
        "_lock",
        "_outbox",
        "_outbox_bytes",
        "_writer",
        "_timer",
        "_ping_payload",
        "_last_read",
        "_decided",
        "_response",
        "_status",
        "_bytes_sent",
        "_close_code",
        "_aborted",
        "_fragments",
        "_decoder",
        "_text",
        "_peer",
        "_closing",
        "_raw_send",
        "_budget",
        "_slow_close",
        "__weakref__",
    )

    def __init__(
        self, sock: Any, scope: dict[str, Any], options: WebSocketOptions, *, upgraded: bool
    ) -> None:
        self.sock = sock
        self.options = options
        self.scope = scope
        if upgraded:
            self.protocol = self._open_protocol([], None)
        else:
            self.protocol = ServerProtocol(
                extensions=options.extensions(),
                max_size=(options.max_message_size, options.max_fragment_size),
                logger=_PROTOCOL_LOGGER,
            )
        self.conn: Connection | None = None
        self._lock = Semaphore()
        self._outbox: deque[bytes] | None = None  # allocated only while bytes wait
        self._outbox_bytes = 0
        self._writer: gevent.Greenlet | None = None
        self._timer: Any = None
        self._ping_payload: bytes | None = None
        self._last_read = time.monotonic()
        self._decided: Event | None = None if upgraded else Event()
        self._response: Response | None = None
        self._status = 101
        self._bytes_sent = 0
        self._close_code: int | None = None  # overrides the protocol's when we aborted
        self._aborted = False
        self._closing = False
        self._fragments: list[Any] | None = None
        self._decoder: Any = None
        self._text = False
        client = scope.get("client") or ["?", 0]
        self._peer = f"{client[0]}:{client[1]}"
        self._raw_send = raw_sender(sock)  # None: every write goes through the writer
        self._budget = InboundBudget(
            options.control_frame_rate,
            options.control_frame_burst,
            bytes_per_slice=max(options.read_size, _FEED_SLICE),
        )
        self._slow_close = False

    def _open_protocol(self, extensions: list[Any], subprotocol: Any) -> ServerProtocol:
        options = self.options
        protocol = _Protocol(
            state=OPEN,
            max_size=(options.max_message_size, options.max_fragment_size),
            logger=_PROTOCOL_LOGGER,
        )
        protocol.extensions = extensions
        protocol.subprotocol = subprotocol
        return protocol

    # -- the opening handshake ---------------------------------------------------

    def handshake(self, environ: dict[str, Any], start: Callable[[], Connection]) -> bool:
        """Validate the request, let the consumer decide, answer it. True if open.

        Args:
            environ: the WSGI environ of the upgrade request.
            start: builds the consumer Connection (called only for a valid
                handshake request) with :meth:`consumer_send` as its ``send``.
        """
        try:
            request = _request_from_environ(environ)
        except InvalidHeader as exc:  # a control character (NUL, CR...) in a header value
            refused("websocket_bad_handshake", f"{self._peer}: {exc}", log=logger)
            self._reject(400, f"Invalid handshake request: {exc}.")
            return False
        with self._lock:
            response = self.protocol.accept(request)
        if response.status_code != 101:
            logger.info(
                "refused WebSocket handshake from %s for %s: %d %s (%s)",
                self._peer,
                self.scope.get("path"),
                response.status_code,
                response.reason_phrase,
                self.protocol.handshake_exc,
            )
            if "Sec-WebSocket-Version" in str(self.protocol.handshake_exc):
                response.headers["Sec-WebSocket-Version"] = "13"
            self._send_response(response)
            return False
        self._response = response
        try:
            self.conn = start()
        except Exception:
            logger.exception("could not start the consumer for %s", self.scope.get("path"))
            self._reject(500, "The WebSocket consumer failed to start.")
            return False
        self.conn.push({"type": "websocket.connect"})
        assert self._decided is not None
        if not self._decided.wait(self.options.handshake_timeout):
            with self._lock:
                undecided = self.protocol.state is CONNECTING and self._response is not None
            if undecided:
                logger.warning(
                    "consumer for %s did not accept or refuse within handshake_timeout=%ss; "
                    "answering 503",
                    self.scope.get("path"),
                    self.options.handshake_timeout,
                )
                self._reject(503, "The WebSocket consumer did not answer in time.")
                return False
        return self._status == 101

    def _send_response(self, response: Response) -> None:
        with self._lock:
            answered = self._decided is None or self._decided.is_set()
            if answered or self.protocol.state is not CONNECTING:
                return  # one answer per handshake (a late accept/close is dropped)
            self._status = response.status_code
            self._response = None
            handshake = self.protocol
            handshake.send_response(response)
            data = handshake.data_to_send()
            if response.status_code == 101:
                # The request came parsed from the WSGI server, so the handshake
                # protocol's parser never saw it: frames go to a fresh protocol
                # that starts OPEN with what the handshake negotiated.
                self.protocol = self._open_protocol(handshake.extensions, handshake.subprotocol)
            self._queue(data)
        if self._decided is not None:
            self._decided.set()

    def _reject(self, status: int, text: str) -> None:
        self._send_response(self.protocol.reject(status, text + "\n"))

    def _accept(self, event: dict[str, Any]) -> None:
        response = self._response
        if response is None:
            return
        subprotocol = event.get("subprotocol")
        if (
            not subprotocol
            and self.scope.get("wsbridge.token_subprotocol")
            and BEARER_SUBPROTOCOL in self.scope.get("subprotocols", ())
        ):
            # The token came as a subprotocol: browsers need one selected back.
            subprotocol = BEARER_SUBPROTOCOL
        if subprotocol:
            if subprotocol not in self.scope.get("subprotocols", ()):
                logger.error(
                    "consumer for %s chose subprotocol %r, which the client did not offer "
                    "(offered: %s); refusing with 500",
                    self.scope.get("path"),
                    subprotocol,
                    self.scope.get("subprotocols"),
                )
                self._reject(500, "The WebSocket consumer chose an unoffered subprotocol.")
                return
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.protocol.subprotocol = subprotocol
        for name, value in event.get("headers") or ():
            response.headers[_text(name)] = _text(value)
        self._send_response(response)

    # -- events from the consumer (mailbox greenlet) --------------------------

    def consumer_send(self, event: dict[str, Any]) -> None:
        """The ``send`` callable given to the consumer's Connection.

        Never raises for a gone client and never blocks: frames go to the
        bounded outbound queue.
        """
        kind = event.get("type")
        state = self.protocol.state
        if state is CONNECTING:
            if kind == "websocket.close":
                failed = bool(event.get("error"))
                if failed:
                    self._reject(500, "The WebSocket consumer failed.")
                else:
                    self._reject(403, "The WebSocket connection was refused.")
                return
            # A message before accept() accepts implicitly (Channels 1.x replies).
            self._accept({} if kind != "websocket.accept" else event)
            if kind == "websocket.accept" or self.protocol.state is not OPEN:
                return
        elif kind == "websocket.accept":
            return
        if kind == "websocket.send":
            self.send_message(event.get("text"), event.get("bytes"))
        elif kind == "websocket.close":
            code = event.get("code")
            if event.get("denied") and code == 1000 and self._decided is None:
                code = 1008  # refused after a server-side (gevent-websocket) handshake
            self.close(code if code is not None else 1000, event.get("reason") or "")
        else:
            logger.warning("WebSocket transport ignores event %r from the consumer", kind)

    def send_message(self, text: str | None, data: bytes | None) -> None:
        """Queue one message (text wins when both are given); dropped once closing."""
        with self._lock:
            if self.protocol.state is not OPEN or self._aborted:
                logger.debug("dropping a message for closing WebSocket %s", self._peer)
                return
            if text is not None:
                payload, first = text.encode("utf-8"), OP_TEXT
            elif data is not None:
                payload, first = bytes(data), OP_BINARY
            else:
                return
            protocol = self.protocol
            if protocol.extensions or protocol.writes or protocol.expect_continuation_frame:
                # Extensions transform payloads (permessage-deflate): the protocol frames.
                if first == OP_TEXT:
                    protocol.send_text(payload)
                else:
                    protocol.send_binary(payload)
                self._queue(protocol.data_to_send())
            else:
                # One chunk: an empty payload alone would read as SEND_EOF (b"").
                self._queue((frame_header(first, len(payload)) + payload,))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the socket is aborted after ``close_timeout``."""
        if self.protocol.state is CONNECTING:
            if code == GOING_AWAY:
                self._reject(503, "The server is shutting down.")
            else:
                self._reject(403, "The WebSocket connection was refused.")
            return
        with self._lock:
            if self.protocol.state is OPEN:
                try:
                    self.protocol.send_close(code, reason[:120])
                except Exception:  # an invalid code from the application
                    logger.error("consumer asked to close with invalid code %r; using 1011", code)
                    self.protocol.send_close(1011)
            else:
                return
            self._queue(self.protocol.data_to_send())

    # -- the outbound queue and its writer ------------------------------------

    def _queue(self, chunks: Iterable[bytes]) -> None:
        """Write or queue bytes (under the lock); enforce the outbound bound."""
        if self._aborted:
            return
        pending = self._outbox_bytes
        if not pending and self._writer is None and self._raw_send is not None:
            # Nothing in flight, so writing now keeps the order.
            chunks = self._write_now(chunks)
            if self._aborted:
                return
        for chunk in chunks:
            if self._outbox is None:
                self._outbox = deque()
            self._outbox.append(chunk)
            self._outbox_bytes += len(chunk)
        if pending and self._outbox_bytes > self.options.max_outbound_bytes:
            self._slow_client()
            return
        if not self._closing and (self.protocol.close_sent is not None or self.protocol.eof_sent):
            self._closing = True  # from now on the timer is the closing deadline
            self._arm_timer(self.options.close_timeout)
        if self._outbox and self._writer is None:
            self._writer = gevent.spawn(self._write_loop)

    def _write_now(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        """Give the kernel what it takes without waiting; return the rest, for the writer."""
        chunks = tuple(chunks)
        if not chunks or not all(chunks):
            return chunks  # nothing, or websockets' SEND_EOF (b""): the writer half-closes
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        assert self._raw_send is not None
        try:
            sent = self._raw_send(data)
        except BlockingIOError:
            return (data,)
        except OSError as exc:
            logger.debug("write to %s failed: %s", self._peer, exc)
            self._abort()
            return ()
        self._bytes_sent += sent
        return () if sent == len(data) else (data[sent:],)

    def _write_loop(self) -> None:
        # The only greenlet that writes to the socket: sendall() is never
        # interleaved, and it exists only while bytes are waiting.
        try:
            while self._outbox and not self._aborted:
                outbox = self._outbox
                chunk = outbox[0]
                if not chunk:  # websockets' SEND_EOF: half-close
                    self.sock.shutdown(socket.SHUT_WR)
                else:
                    self.sock.sendall(chunk)
                    self._bytes_sent += len(chunk)
                if outbox is self._outbox and outbox and outbox[0] is chunk:
                    outbox.popleft()
                    self._outbox_bytes -= len(chunk)
            if not self._outbox:
                self._outbox = None
        except OSError as exc:
            logger.debug("write to %s failed: %s", self._peer, exc)
            self._abort()
        finally:
            self._writer = None

    def _slow_client(self) -> None:
        # Under the lock. Keep only the chunk at the head of the queue (it may be
        # half written: a frame cut short would garble the stream), then the
        # close frame, written within slow_close_timeout or the socket is aborted.
        refused(
            "websocket_slow_client",
            f"{self._peer} on {self.scope.get('path')} does not read: {self._outbox_bytes} "
            f"bytes waiting > max_outbound_bytes={self.options.max_outbound_bytes}; "
            f"closing with {SLOW_CLIENT_CLOSE_CODE}",
            log=logger,
        )
        self._close_code = SLOW_CLIENT_CLOSE_CODE
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        while len(outbox) > 1:
            outbox.pop()  # in place: the writer compares the deque it is draining
        self._outbox_bytes = len(outbox[0]) if outbox else 0
        if self.protocol.state is OPEN:
            self.protocol.fail(SLOW_CLIENT_CLOSE_CODE, "outbound queue full")
        for chunk in self.protocol.data_to_send():
            outbox.append(chunk)
            self._outbox_bytes += len(chunk)
        self._closing = self._slow_close = True
        self._arm_timer(self.options.slow_close_timeout)
        if self._writer is None and outbox:
            self._writer = gevent.spawn(self._write_loop)

    def _abort(self) -> None:
        """Drop the connection now: RST, wake the reader and the writer."""
        if self._aborted:
            return
        self._aborted = True
        self._outbox = None
        self._outbox_bytes = 0
        try:
            # Linger 0: close() sends RST and frees the kernel buffers at once.
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- timers: keepalive pings and the closing deadline -----------------------

    def _arm_timer(self, seconds: float | None) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if seconds is not None:
            self._timer = gevent.get_hub().loop.timer(max(seconds, 0.001), ref=False)
            self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        # Runs in the hub: must not block.
        self._timer = None
        try:
            with self._lock:
                self._tick()
        except Exception:  # never let a timer callback kill the hub
            logger.exception("WebSocket timer failed for %s", self._peer)
            self._abort()

    def _tick(self) -> None:
        protocol = self.protocol
        if self._slow_close and not self._outbox:
            # The slow client's close frame went out in time: now the usual closing wait.
            self._slow_close = False
            self._arm_timer(self.options.close_timeout)
            return
        if self._closing or protocol.state is not OPEN:
            logger.debug("closing handshake with %s timed out; aborting", self._peer)
            self._abort()
            return
        if self._ping_payload is not None:
            logger.info(
                "WebSocket client %s did not answer a ping within %ss; closing with %d",
                self._peer,
                self.options.ping_timeout,
                PING_TIMEOUT_CLOSE_CODE,
            )
            self._close_code = PING_TIMEOUT_CLOSE_CODE
            protocol.fail(PING_TIMEOUT_CLOSE_CODE, "keepalive ping timeout")
            self._queue(protocol.data_to_send())
            self._arm_timer(min(self.options.close_timeout, 1.0))
            return
        interval = self.options.ping_interval
        assert interval is not None
        idle = time.monotonic() - self._last_read
        if idle < interval:
            self._arm_timer(interval - idle)
            return
        self._ping_payload = os.urandom(4)
        protocol.send_ping(self._ping_payload)
        self._queue(protocol.data_to_send())
        self._arm_timer(self.options.ping_timeout)

    # -- the read loop (the request greenlet) ------------------------------------

    def run(self, preread: bytes = b"") -> None:
        """Read until the connection is over, then tell the consumer (``disconnected``)."""
        _ACTIVE.add(self)
        if self.options.ping_interval is not None:
            with self._lock:
                self._arm_timer(self.options.ping_interval)
        try:
            if preread and not self._feed_all(preread):
                return
            while True:
                try:
                    data = self.sock.recv(self.options.read_size)
                except OSError as exc:
                    logger.debug("WebSocket client %s dropped: %s", self._peer, exc)
                    data = b""
                if self._aborted or not self._feed_all(data):
                    break
        finally:
            self._finish()

    def _feed_all(self, data: bytes) -> bool:
        """Feed one read in slices of ``_FEED_SLICE`` bytes; False when reading is over."""
        if len(data) <= _FEED_SLICE:
            return self._feed(data)
        view = memoryview(data)
        for start in range(0, len(data), _FEED_SLICE):
            if self._aborted or not self._feed(bytes(view[start : start + _FEED_SLICE])):
                return False
        return True

    def _feed(self, data: bytes) -> bool:
        """Feed bytes (b"" = EOF); deliver messages. False when reading is over.

        Yields to the hub once the connection's slice of work is spent, so a
        flood of frames that never blocks (control frames) cannot starve the
        other greenlets.
        """
        with self._lock:
            protocol = self.protocol
            if data:
                self._last_read = time.monotonic()
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            frames = protocol.events_received()
            self._queue(protocol.data_to_send())
        for frame in frames:
            self._on_frame(frame)  # type: ignore[arg-type]  # OPEN: frames only
        if self._budget.spend(len(frames), len(data)):
            _yield_to_io()  # bounded work done: let every other connection run
        return (
            bool(data)
            and self.protocol.state is not CLOSED
            and not self._aborted
            and self._close_code != CONTROL_FLOOD_CLOSE_CODE  # a flooder is not read further
        )

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._text = opcode is Opcode.TEXT
            self._fragments = None
            self._decoder = None
            if frame.fin:
                if self._text:
                    try:
                        text = bytes(frame.data).decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self._invalid_utf8(exc)
                        return
                    self._deliver({"type": "websocket.receive", "text": text})
                else:
                    self._deliver({"type": "websocket.receive", "bytes": bytes(frame.data)})
                return
            self._fragments = []
            if self._text:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        elif opcode is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol has already failed the connection
        elif opcode is Opcode.PONG:
            if not self._budget.control():
                self._control_flood()
                return
            if self._ping_payload is not None and frame.data == self._ping_payload:
                with self._lock:
                    self._ping_payload = None
                    if self.protocol.state is OPEN and self.options.ping_interval is not None:
                        self._arm_timer(self.options.ping_interval)
            return
        elif opcode is Opcode.PING:
            if not self._budget.control():
                self._control_flood()
            return  # answered by the protocol
        else:
            return  # CLOSE: handled by the protocol
        self._add_fragment(frame)

    def _control_flood(self) -> None:
        with self._lock:
            if self.protocol.state is not OPEN:
                return
            refused(
                "websocket_control_flood",
                f"{self._peer} on {self.scope.get('path')} sent control frames faster than "
                f"control_frame_rate={self.options.control_frame_rate}/s; "
                f"closing with {CONTROL_FLOOD_CLOSE_CODE}",
                log=logger,
            )
            self._close_code = CONTROL_FLOOD_CLOSE_CODE
            self.protocol.fail(CONTROL_FLOOD_CLOSE_CODE, "control frame rate limit")
            self._queue(self.protocol.data_to_send())
            self._arm_timer(min(self.options.close_timeout, 1.0))

    def _add_fragment(self, frame: Frame) -> None:
        assert self._fragments is not None
        if self._decoder is not None:
            # Decode each frame as it comes: invalid UTF-8 fails fast (Autobahn 6.x).
            try:
                self._fragments.append(self._decoder.decode(frame.data, frame.fin))
            except UnicodeDecodeError as exc:
                self._invalid_utf8(exc)
                return
        else:
            self._fragments.append(bytes(frame.data))
        if frame.fin:
            parts, self._fragments, self._decoder = self._fragments, None, None
            if self._text:
                self._deliver({"type": "websocket.receive", "text": "".join(parts)})
            else:
                self._deliver({"type": "websocket.receive", "bytes": b"".join(parts)})

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        logger.info("WebSocket client %s sent invalid UTF-8; closing with 1007", self._peer)
        self._fragments = self._decoder = None
        with self._lock:
            if self.protocol.state is OPEN:
                self.protocol.fail(1007, f"{exc.reason} at position {exc.start}")
                self._queue(self.protocol.data_to_send())

    def _deliver(self, event: dict[str, Any]) -> None:
        conn = self.conn
        if conn is not None and self.protocol.state is OPEN:
            conn.push(event)  # may block: backpressure, the lock is not held

    def _finish(self) -> None:
        _ACTIVE.discard(self)
        with self._lock:
            self._arm_timer(None)
        code = self._close_code
        if code is None:
            # The code the client sent; when it sent none, the one we closed
            # with (a limit, a protocol error); else 1006 (no closing handshake).
            protocol = self.protocol
            close = protocol.close_rcvd or protocol.close_sent
            code = close.code if close is not None else 1006
        exc = self.protocol.parser_exc
        if exc is not None and not isinstance(exc, EOFError):
            logger.info(
                "WebSocket client %s broke the protocol: %s; closed with %d", self._peer, exc, code
            )
        elif code == 1006:
            logger.debug("WebSocket client %s went away without a closing handshake", self._peer)
        self._close_socket()
        if self.conn is not None:
            self.conn.disconnected(code)

    def finish_rejected(self) -> None:
        """After a refused handshake: flush the answer, then close the connection."""
        self._close_socket()

    def _close_socket(self) -> None:
        # Let the writer flush what is queued (bounded), then shut the socket
        # down; the WSGI server that lent it closes the descriptor.
        writer = self._writer
        if writer is not None and not self._aborted:
            writer.join(self.options.close_timeout)
        if self._writer is not None:
            self._abort()
            self._writer.join(1.0)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def status(self) -> int:
        """The HTTP status of the handshake answer (101 when it opened)."""
        return self._status

    @property
    def bytes_sent(self) -> int:
        return self._bytes_sent


def _yield_to_io() -> None:
    """Let the hub poll for I/O and run every other ready greenlet, then come back.

    A zero-second timer fires after the hub's next poll; ``gevent.sleep(0)``
    would only run the callbacks already queued, and a flooding reader that
    yields that way would still keep other sockets from being read.
    """
    hub = gevent.get_hub()
    timer = hub.loop.timer(0)
    try:
        hub.wait(timer)
    finally:
        timer.close()


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


@dataclass
class _Outcome:
    status: int
    bytes_sent: int
    transport: WebSocketTransport | None = field(default=None, repr=False)


def serve_websocket(
    handover: Handover,
    environ: dict[str, Any],
    scope: dict[str, Any],
    consumer_class: Any,
    *,
    layer: BaseChannelLayer | None,
    options: WebSocketOptions,
) -> _Outcome:
    """Run one WebSocket connection on a handed-over socket until it is over.

    Validates the handshake (answering 400/405/426 as websockets decides),
    lets the consumer accept (101), refuse (403) or fail (500), then reads
    frames into the consumer's mailbox until the connection closes.

    Returns:
        The handshake status and bytes written, for the server's access log.
    """
    transport = WebSocketTransport(handover.sock, scope, options, upgraded=handover.upgraded)

    def start() -> Connection:
        conn = Connection(scope, consumer_class, layer, transport.consumer_send)
        if policies_active():
            conn.set_backlog(lambda: transport._outbox_bytes, options.max_outbound_bytes // 2)
        return conn

    if handover.upgraded:
        transport.conn = start()
        transport.conn.push({"type": "websocket.connect"})
        opened = True
    else:
        opened = transport.handshake(environ, start)
    if opened:
        transport.run(handover.preread)
    else:
        transport.finish_rejected()
        if transport.conn is not None:
            transport.conn.disconnected(1006)  # harmless if the runner already knows
    return _Outcome(transport.status, transport.bytes_sent, transport)
