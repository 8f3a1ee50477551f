"""One WebSocket's way out: write now when nothing waits, else a bounded queue and a writer.

A write with nothing queued before it goes straight to the kernel (a
non-blocking ``send``, :func:`~wsbridge.transport.wsframes.raw_sender`);
what the kernel does not take goes to an outbound queue drained by a writer
greenlet that exists only while bytes are waiting. The queue's bound is the
transport's to enforce (:attr:`Outbound.pending_bytes` after each
:meth:`Outbound.write`): it knows which close code a client that does not
read gets.

Called under the transport's lock (never blocks); the writer greenlet is
the only one that waits on the socket.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any

import gevent

from .. import metrics as _metrics
from .wsframes import raw_sender

__all__ = ["Outbound"]

logger = logging.getLogger("wsbridge.websocket")

# Linger 0: close() sends RST and frees the kernel buffers at once.
_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"


class Outbound:
    """The outbound queue and writer of one socket."""

    __slots__ = ("sock", "peer", "raw_send", "outbox", "pending_bytes", "writer", "sent", "aborted")

    def __init__(self, sock: Any, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        #: None: every write goes through the writer (TLS, another server's socket).
        self.raw_send = raw_sender(sock)
        self.outbox: deque[bytes] | None = None  # allocated only while bytes wait
        #: Bytes queued and not yet taken by the kernel.
        self.pending_bytes = 0
        self.writer: gevent.Greenlet | None = None
        #: Bytes the kernel took, for the access log.
        self.sent = 0
        self.aborted = False

    def write(self, chunks: Iterable[bytes]) -> None:
        """Write what the kernel takes now if nothing waits; queue the rest for the writer."""
        if self.aborted:
            return
        if not self.pending_bytes and self.writer is None and self.raw_send is not None:
            # Nothing in flight, so writing now keeps the order.
            chunks = self._write_now(chunks)
            if self.aborted:
                return
        for chunk in chunks:
            if self.outbox is None:
                self.outbox = deque()
            self.outbox.append(chunk)
            self.pending_bytes += len(chunk)
        if self.outbox and self.writer is None:
            self.writer = gevent.spawn(self._write_loop)

    def keep_head_only(self) -> None:
        """Drop everything queued but the chunk being written (a cut frame garbles the stream)."""
        outbox = self.outbox
        if outbox is None:
            outbox = self.outbox = deque()
        while len(outbox) > 1:
            outbox.pop()  # in place: the writer compares the deque it is draining
        self.pending_bytes = len(outbox[0]) if outbox else 0

    def _write_now(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        """Give the kernel what it takes without waiting; return the rest, for the writer."""
        chunks = tuple(chunks)
        if not chunks or not all(chunks):
            return chunks  # nothing, or websockets' SEND_EOF (b""): the writer half-closes
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        assert self.raw_send is not None  # the caller checked
        try:
            sent = self.raw_send(data)
        except BlockingIOError:
            return (data,)
        except OSError as exc:
            logger.debug("write to %s failed: %s", self.peer, exc)
            self.abort()
            return ()
        self.sent += sent
        _metrics.STATS.websocket_bytes_out += sent
        return () if sent == len(data) else (data[sent:],)

    def _write_loop(self) -> None:
        # The only greenlet that writes to the socket: sendall() is never
        # interleaved, and it exists only while bytes are waiting.
        try:
            while self.outbox and not self.aborted:
                outbox = self.outbox
                chunk = outbox[0]
                if not chunk:  # websockets' SEND_EOF: half-close
                    self.sock.shutdown(socket.SHUT_WR)
                else:
                    self.sock.sendall(chunk)
                    self.sent += len(chunk)
                    _metrics.STATS.websocket_bytes_out += len(chunk)
                if outbox is self.outbox and outbox and outbox[0] is chunk:
                    outbox.popleft()
                    self.pending_bytes -= len(chunk)
            if not self.outbox:
                self.outbox = None
        except OSError as exc:
            logger.debug("write to %s failed: %s", self.peer, exc)
            self.abort()
        finally:
            self.writer = None

    def abort(self) -> None:
        """Drop the connection now: RST, which wakes the reader and the writer."""
        if self.aborted:
            return
        self.aborted = True
        self.outbox = None
        self.pending_bytes = 0
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, flush_timeout: float) -> None:
        """Let the writer flush (bounded), then shut the socket down.

        The WSGI server that lent the socket closes the descriptor.
        """
        writer = self.writer
        if writer is not None and not self.aborted:
            writer.join(flush_timeout)
        if self.writer is not None:
            self.abort()
            self.writer.join(1.0)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
