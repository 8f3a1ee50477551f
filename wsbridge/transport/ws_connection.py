"""One WebSocket connection: a websockets ``ServerProtocol`` moved over a gevent socket.

:class:`WebSocketTransport` is the read loop (the request greenlet that
handed the socket over), the opening handshake's flow, the consumer's
outputs (the connection contract, :mod:`wsbridge.protocol.connection`), the
keepalive and closing timers, and the close codes wsbridge chooses; the
handshake's pieces are in :mod:`.ws_handshake`, the way out in
:mod:`.ws_outbound`, message assembly in :mod:`.ws_messages`. The overview
(what costs what, the close codes) is :mod:`wsbridge.transport.websocket`'s.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from websockets.exceptions import InvalidHeader
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.typing import Subprotocol

from .. import admission, drops
from .. import metrics as _metrics
from ..consumers.runner import Connection
from ..protocol.closecodes import CloseCode
from ..protocol.connection import CloseFrame, Message, Opened, Output, Shutdown, refusal_for
from .limits import InboundBudget, refused
from .ws_handshake import (
    REFUSAL_TEXT,
    REFUSED,
    accept_response,
    count_handshake,
    handshake_protocol,
    negotiate,
    open_protocol,
    refuse_non_get,
    request_from_environ,
    shared_negotiator,
)
from .ws_messages import MessageAssembler
from .ws_outbound import Outbound
from .wsframes import OP_BINARY, frame_header, text_frame
from .wsoptions import (
    CONTROL_FLOOD_CLOSE_CODE,
    GOING_AWAY,
    PING_TIMEOUT_CLOSE_CODE,
    SLOW_CLIENT_CLOSE_CODE,
    WebSocketOptions,
)

__all__ = ["WebSocketTransport", "active_connections", "close_all"]

logger = logging.getLogger("wsbridge.websocket")

#: Close codes after which the client's further input is not read: it was closed for
#: flooding (control frames over their rate, messages or bytes over a rate limit).
NOT_READ_FURTHER = frozenset({int(CONTROL_FLOOD_CLOSE_CODE), int(CloseCode.RATE_LIMITED)})

#: Bytes fed to the protocol at once: a slice of the smallest frames (6 bytes
#: each) costs a few milliseconds to parse before the budget is checked.
_FEED_SLICE = 8 * 1024

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
        "out",
        "_timer",
        "_ping_payload",
        "_last_read",
        "_decided",
        "_response",
        "_extensions",
        "_status",
        "_close_code",
        "_messages",
        "_peer",
        "_closing",
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
        # Until answered: the shared negotiator (_send_response gives the connection its own).
        self.protocol = open_protocol(options, [], None) if upgraded else shared_negotiator(options)
        self.conn: Connection | None = None
        self._lock = Semaphore()
        self._timer: Any = None
        self._ping_payload: bytes | None = None
        self._last_read = time.monotonic()
        self._decided: Event | None = None if upgraded else Event()
        self._response: Response | None = None
        self._extensions: list[Any] = []  # what the 101 agreed on (permessage-deflate)
        self._status = 101
        self._close_code: int | None = None  # overrides the protocol's when we aborted
        self._closing = False
        self._messages = MessageAssembler()
        client = scope.get("client") or ["?", 0]
        self._peer = f"{client[0]}:{client[1]}"
        #: The outbound queue and its writer (what the client has not read yet).
        self.out = Outbound(sock, self._peer)
        self._budget = InboundBudget(
            options.control_frame_rate,
            options.control_frame_burst,
            bytes_per_slice=max(options.read_size, _FEED_SLICE),
        )
        self._slow_close = False

    # -- the opening handshake ---------------------------------------------------

    def handshake(self, environ: dict[str, Any], start: Callable[[], Connection]) -> bool:
        """Validate the request, let the consumer decide, answer it. True if open.

        Args:
            environ: the WSGI environ of the upgrade request.
            start: builds the consumer Connection (called only for a valid
                handshake request) with :meth:`consumer_output` as its ``outputs``.
        """
        try:
            request = request_from_environ(environ)
        except InvalidHeader as exc:  # a control character (NUL, CR...) in a header value
            refused("websocket_bad_handshake", f"{self._peer}: {exc}", log=logger)
            self._reject(400, f"Invalid handshake request: {exc}.")
            return False
        with self._lock:
            response = refuse_non_get(environ, self.protocol)
            if response is None:
                negotiated = negotiate(self.protocol, request)
                if negotiated is not None:
                    response, self._extensions = negotiated
                else:  # not a valid upgrade: websockets answers, and says why
                    self.protocol = handshake_protocol(self.options)
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
            _metrics.record_handshake("refused", "bad_request")
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
            _metrics.record_handshake("refused", "consumer_error")
            return False
        self.conn.push({"type": "websocket.connect"})
        assert self._decided is not None
        if not self._decided.wait(self.options.handshake_timeout):
            with self._lock:
                undecided = self.protocol.state is CONNECTING and self._response is not None
            if undecided:
                refused(
                    "consumer_handshake_timeout",
                    f"consumer for {self.scope.get('path')} did not accept or refuse within "
                    f"handshake_timeout={self.options.handshake_timeout}s; answering 503",
                    log=logger,
                )
                self._reject(503, "The WebSocket consumer did not answer in time.")
                _metrics.record_handshake("timed_out", "consumer")
                return False
        count_handshake(self._status)
        return self._status == 101

    def _send_response(self, response: Response) -> None:
        with self._lock:
            answered = self._decided is None or self._decided.is_set()
            if answered or self.protocol.state is not CONNECTING:
                return  # one answer per handshake (a late accept/close is dropped)
            self._status = response.status_code
            self._response = None
            handshake = self.protocol
            shared = handshake is shared_negotiator(self.options)
            if response.status_code == 101 and shared:
                data = [response.serialize()]
                extensions = self._extensions
            else:
                if shared:  # a refusal: websockets writes it, from a protocol of its own
                    handshake = self.protocol = handshake_protocol(self.options)
                handshake.send_response(response)
                data = handshake.data_to_send()
                extensions = handshake.extensions
            if response.status_code == 101:
                # The WSGI server parsed the request, so no parser saw it: frames go
                # to a protocol that starts OPEN with what the handshake negotiated.
                subprotocol = response.headers.get("Sec-WebSocket-Protocol")
                self.protocol = open_protocol(
                    self.options, extensions, Subprotocol(subprotocol) if subprotocol else None
                )
            self._queue(data)
        if self._decided is not None:
            self._decided.set()

    def _reject(self, status: int, text: str) -> None:
        self._send_response(self.protocol.reject(status, text + "\n"))

    def _accept(self, opened: Opened) -> None:
        response = self._response
        if response is not None:
            self._send_response(accept_response(self.protocol, response, opened, self.scope))

    # -- events from the consumer (mailbox greenlet) --------------------------

    def consumer_output(self, output: Output) -> None:
        """What the consumer's Connection puts on the wire (the connection contract).

        Never raises for a gone client and never blocks: frames go to the
        bounded outbound queue.
        """
        if isinstance(output, Message):
            self.send_message(output.text, output.data)
        elif isinstance(output, CloseFrame):
            self.close(output.code, output.reason)
        elif isinstance(output, Opened):
            if self.protocol.state is CONNECTING:
                # A message before accept() accepts implicitly (Channels 1.x replies).
                self._accept(output)
        elif self.protocol.state is CONNECTING:
            self._reject(output.status, REFUSAL_TEXT.get(output.status, REFUSED))
        else:
            # The server (gevent-websocket) already answered 101: a close frame says no.
            self.close(output.close_code, output.reason)

    def send_message(self, text: str | None, data: bytes | None) -> None:
        """Queue one message (text wins when both are given); dropped once closing."""
        with self._lock:
            if self.protocol.state is not OPEN or self.out.aborted:
                drops.record_drop("connection_closed", detail=f"WebSocket {self._peer}")
                return
            if text is None and data is None:
                return
            stats = _metrics.STATS
            stats.websocket_messages_out += 1
            protocol = self.protocol
            if protocol.extensions or protocol.writes or protocol.expect_continuation_frame:
                # Extensions transform payloads (permessage-deflate): the protocol frames.
                if text is not None:
                    protocol.send_text(text.encode("utf-8"))
                else:
                    protocol.send_binary(bytes(data))  # type: ignore[arg-type]
                self._queue(protocol.data_to_send())
            elif text is not None:
                # One chunk: an empty payload alone would read as SEND_EOF (b"").
                self._queue((text_frame(text),))
            else:
                payload = bytes(data)  # type: ignore[arg-type]
                self._queue((frame_header(OP_BINARY, len(payload)) + payload,))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the socket is aborted after ``close_timeout``."""
        if self.protocol.state is CONNECTING:
            status = refusal_for(Shutdown(code)).status  # 503 going away, else 403
            self._reject(status, REFUSAL_TEXT[status])
            return
        with self._lock:
            if self.protocol.state is OPEN:
                try:
                    self.protocol.send_close(code, reason[:120])
                except Exception:  # an invalid code from the application
                    logger.error("consumer asked to close with invalid code %r; using 1011", code)
                    self.protocol.send_close(CloseCode.INTERNAL_ERROR)
            else:
                return
            self._queue(self.protocol.data_to_send())
            if code in NOT_READ_FURTHER:
                # A client closed for its flood: what it still sends is not parsed, and
                # the closing wait is short (one client costs only itself).
                self._close_code = int(code)
                self._arm_timer(min(self.options.close_timeout, 1.0))

    # -- the outbound queue and its writer ------------------------------------

    def _queue(self, chunks: Iterable[bytes]) -> None:
        """Write or queue bytes (under the lock); enforce the outbound bound."""
        out = self.out
        if out.aborted:
            return
        pending = out.pending_bytes
        out.write(chunks)
        if out.aborted:
            return
        if pending and out.pending_bytes > self.options.max_outbound_bytes:
            self._slow_client()
            return
        if not self._closing and (self.protocol.close_sent is not None or self.protocol.eof_sent):
            self._closing = True  # from now on the timer is the closing deadline
            self._arm_timer(self.options.close_timeout)

    def _slow_client(self) -> None:
        # Under the lock. Keep only the chunk at the head of the queue (it may be
        # half written: a frame cut short would garble the stream), then the
        # close frame, written within slow_close_timeout or the socket is aborted.
        refused(
            "websocket_slow_client",
            f"{self._peer} on {self.scope.get('path')} does not read: {self.out.pending_bytes} "
            f"bytes waiting > max_outbound_bytes={self.options.max_outbound_bytes}; "
            f"closing with {SLOW_CLIENT_CLOSE_CODE}",
            log=logger,
        )
        self._close_code = SLOW_CLIENT_CLOSE_CODE
        out = self.out
        out.keep_head_only()
        if self.protocol.state is OPEN:
            self.protocol.fail(SLOW_CLIENT_CLOSE_CODE, "outbound queue full")
        self._closing = self._slow_close = True
        self._arm_timer(self.options.slow_close_timeout)
        out.write(self.protocol.data_to_send())

    def _abort(self) -> None:
        """Drop the connection now: RST, wake the reader and the writer."""
        self.out.abort()

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
        if self._slow_close and not self.out.outbox:
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
                if self.out.aborted:
                    break
                if data and self._close_code in NOT_READ_FURTHER:
                    # Closed for flooding: not read any more, so the flooder meets TCP's
                    # backpressure and costs nothing; the short closing deadline (1 s)
                    # aborts, which leaves a client that reads time to see its close frame.
                    self._await_abort(self.options.close_timeout)
                    break
                if not self._feed_all(data):
                    break
        finally:
            self._finish()

    def _await_abort(self, limit: float) -> None:
        """Wait (bounded) for the closing deadline's abort, reading nothing meanwhile."""
        deadline = time.monotonic() + limit
        while not self.out.aborted and time.monotonic() < deadline:
            gevent.sleep(0.05)

    def _feed_all(self, data: bytes) -> bool:
        """Feed one read in slices of ``_FEED_SLICE`` bytes; False when reading is over."""
        if len(data) <= _FEED_SLICE:
            return self._feed(data)
        view = memoryview(data)
        for start in range(0, len(data), _FEED_SLICE):
            if self.out.aborted or not self._feed(bytes(view[start : start + _FEED_SLICE])):
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
                _metrics.STATS.websocket_bytes_in += len(data)
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            frames = protocol.events_received()
            self._queue(protocol.data_to_send())
        for frame in frames:
            self._on_frame(frame)  # type: ignore[arg-type]  # OPEN: frames only
        if self._budget.spend(len(frames), len(data)):
            _yield_to_io()  # bounded work done: let every other connection run
        return bool(data) and self.protocol.state is not CLOSED and not self.out.aborted

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            try:
                event = self._messages.feed(frame)
            except UnicodeDecodeError as exc:
                self._invalid_utf8(exc)
                return
            if event is not None:
                self._deliver(event)
        elif opcode is Opcode.PONG:
            if not self._budget.control():
                self._control_flood()
                return
            if self._ping_payload is not None and frame.data == self._ping_payload:
                with self._lock:
                    self._ping_payload = None
                    if self.protocol.state is OPEN and self.options.ping_interval is not None:
                        self._arm_timer(self.options.ping_interval)
        elif opcode is Opcode.PING:
            if not self._budget.control():
                self._control_flood()
            # answered by the protocol
        # CLOSE: handled by the protocol

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
            admission.penalise_flooder(
                admission.client_ip(self.scope), self.scope.get("wsbridge.user_id")
            )
            self._close_code = CONTROL_FLOOD_CLOSE_CODE
            self.protocol.fail(CONTROL_FLOOD_CLOSE_CODE, "control frame rate limit")
            self._queue(self.protocol.data_to_send())
            self._arm_timer(min(self.options.close_timeout, 1.0))

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        code = CloseCode.INVALID_DATA
        logger.info("WebSocket client %s sent invalid UTF-8; closing with %d", self._peer, code)
        with self._lock:
            if self.protocol.state is OPEN:
                self.protocol.fail(code, f"{exc.reason} at position {exc.start}")
                self._queue(self.protocol.data_to_send())

    def _deliver(self, event: dict[str, Any]) -> None:
        conn = self.conn
        if conn is not None and self.protocol.state is OPEN:
            _metrics.STATS.websocket_messages_in += 1
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
            # int(): websockets' CloseCode is an IntEnum, which Python 3.10 prints by name
            code = int(close.code) if close is not None else CloseCode.ABNORMAL
        exc = self.protocol.parser_exc
        if exc is not None and not isinstance(exc, EOFError):
            logger.info(
                "WebSocket client %s broke the protocol: %s; closed with %d", self._peer, exc, code
            )
        elif code == CloseCode.ABNORMAL:
            logger.debug("WebSocket client %s went away without a closing handshake", self._peer)
        self._close_socket()
        if self.conn is not None:
            self.conn.disconnected(code)

    def finish_rejected(self) -> None:
        """After a refused handshake: flush the answer, then close the connection."""
        self._close_socket()

    def _close_socket(self) -> None:
        self.out.close(self.options.close_timeout)

    @property
    def status(self) -> int:
        """The HTTP status of the handshake answer (101 when it opened)."""
        return self._status

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the client, for the access log."""
        return self.out.sent


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
