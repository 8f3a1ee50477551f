"""Streamed pieces written from the consumer's greenlet (``_Exchange``'s direct path).

While a stream is open and nothing of it is queued, a piece goes to the socket
from the consumer's greenlet; the request greenlet (keep-alives, the end)
must then never write in the middle of it. Real pywsgi server on a loopback
port, raw HTTP/1.1 client over gevent sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from gevent import socket

from wsbridge.consumers.http import SseConsumer
from wsbridge.consumers.routing import Router
from wsbridge.layers.memory import MemoryLayer
from wsbridge.transport import http as http_transport
from wsbridge.transport.http import HttpOptions
from wsbridge.transport.server import make_server
from wsbridge.transport.wsgi import wrap

ROUTES = Router()


@ROUTES.http("big/")
class BigEvents(SseConsumer):
    groups = ["big"]
    keepalive_interval = 0.002  # due again and again while a big piece is being written

    def big_item(self, event: dict[str, Any]) -> None:
        self.send_event(f"{event['i']} " + "x" * event["size"])


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


@pytest.fixture
def served() -> Iterator[tuple[int, MemoryLayer]]:
    layer = MemoryLayer()
    bridge = wrap(site, router=ROUTES, layer=layer)
    bridge.http = HttpOptions(write_timeout=5.0, grace=0.3)
    srv = make_server(bridge, "127.0.0.1", 0)
    srv.start()
    try:
        yield srv.server_port, layer
    finally:
        srv.stop(timeout=1)
        layer.close()


class Stream:
    """One ``GET /big/`` over a gevent socket, its chunked body read piece by piece."""

    def __init__(self, port: int, *, small_buffer: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        if small_buffer:  # the server's writes of big pieces block part-way
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.sendall(b"GET /big/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.buf = b""
        self.head = b""

    def _fill(self, slow: bool) -> None:
        if slow:
            gevent.sleep(0.001)
        data = self.sock.recv(65536)
        assert data, "the server closed the stream"
        self.buf += data

    def chunks_until(self, marker: bytes, *, slow: bool = False, timeout: float = 30) -> list:
        """The body's pieces up to the one holding ``marker``; bounded in time."""
        chunks: list[bytes] = []
        try:
            return self._chunks_until(marker, chunks, slow, timeout)
        except gevent.Timeout:
            last = [c[:12] for c in chunks[-3:]]
            raise AssertionError(
                f"no {marker!r} within {timeout}s: {len(chunks)} pieces, the last {last}"
            ) from None

    def _chunks_until(self, marker: bytes, chunks: list, slow: bool, timeout: float) -> list:
        with gevent.Timeout(timeout):
            while not self.head:
                self._fill(slow)
                if b"\r\n\r\n" in self.buf:
                    self.head, _, self.buf = self.buf.partition(b"\r\n\r\n")
                    assert b" 200 " in self.head.split(b"\r\n")[0]
            while True:
                size_line, sep, rest = self.buf.partition(b"\r\n")
                if not sep:
                    self._fill(slow)
                    continue
                assert re.fullmatch(rb"[0-9a-f]+", size_line), f"no chunk size: {size_line[:40]!r}"
                size = int(size_line, 16)
                if len(rest) < size + 2:
                    self._fill(slow)
                    continue
                assert rest[size : size + 2] == b"\r\n", "a chunk did not end where its size says"
                chunks.append(rest[:size])
                self.buf = rest[size + 2 :]
                if marker in chunks[-1]:
                    return chunks

    def close(self) -> None:
        self.sock.close()


def test_keepalives_never_cut_into_a_piece_the_consumer_is_writing(
    served: tuple[int, MemoryLayer],
) -> None:
    port, layer = served
    stream = Stream(port, small_buffer=True)
    try:
        stream.chunks_until(b":", timeout=5)  # the stream's first comment
        count, size = 20, 500_000

        def publish() -> None:
            for i in range(count):
                layer.group_send("big", {"type": "big.item", "i": i, "size": size})
                gevent.sleep(0)

        gevent.spawn(publish)
        chunks = stream.chunks_until(f"data: {count - 1} ".encode(), slow=True)
    finally:
        stream.close()
    events = [c for c in chunks if c.startswith(b"data: ")]
    assert [int(c.split()[1]) for c in events] == list(range(count))
    assert all(c == b"data: %d " % i + b"x" * size + b"\n\n" for i, c in enumerate(events))
    others = {c for c in chunks if not c.startswith(b"data: ")}
    assert others <= {b": keep-alive\n\n", b":\n\n"}


def test_a_streamed_piece_goes_out_without_waking_the_request_greenlet(
    served: tuple[int, MemoryLayer], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, layer = served
    flushes = []
    real_flush = http_transport._Exchange._flush

    def counting_flush(self: Any) -> None:
        if self.outbox:
            flushes.append(len(self.outbox))
        real_flush(self)

    monkeypatch.setattr(http_transport._Exchange, "_flush", counting_flush)
    stream = Stream(port, small_buffer=False)
    try:
        stream.chunks_until(b":", timeout=5)
        before = len(flushes)
        for i in range(100):
            layer.group_send("big", {"type": "big.item", "i": i, "size": 10})
            gevent.sleep(0.001)  # one piece at a time: nothing is queued behind another
        stream.chunks_until(b"data: 99 ")
    finally:
        stream.close()
    # Each piece woke the request greenlet (one flush per piece) before; now none does
    # but the rare one queued behind a keep-alive under way.
    assert len(flushes) - before < 10


class Plain(SseConsumer):
    groups = ["plain"]

    def plain_item(self, event: dict[str, Any]) -> None:
        self.send_event(event["data"])


def test_one_broadcast_is_formatted_once_and_the_next_one_anew() -> None:
    from wsbridge.consumers import http as http_consumers
    from wsbridge.testing import HttpCommunicator

    layer = MemoryLayer()
    streams = [HttpCommunicator(Plain, "GET", "/", channel_layer=layer) for _ in range(3)]
    for comm in streams:
        comm.send_request()
        assert comm.receive_start()[0] == 200
        assert comm.receive_body() == b":\n\n"
    calls = []
    real = http_consumers.format_sse

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(args)
        return real(*args, **kwargs)

    http_consumers.format_sse = counting  # type: ignore[assignment]
    try:
        for text in ("one\ntwo", "three", b"four"):
            layer.group_send("plain", {"type": "plain.item", "data": text})
            for comm in streams:
                assert comm.receive_body() == real(text)
    finally:
        http_consumers.format_sse = real
        for comm in streams:
            comm.disconnect()
    assert len(calls) == 3  # once per broadcast, not once per stream
