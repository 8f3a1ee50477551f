"""A connection that ended leaves no reference cycle (Connection._release).

Before, every WebSocket connection left about 47 objects (its transport,
runner, consumer, buffers, socket) in a cycle that only CPython's cyclic
collector could free: with 1,000 connections kept open and others opening,
full collections ran every few hundred handshakes and each scanned that
garbage. These tests turn the collector off, so an object that is still in a
cycle stays alive and the weak reference to it never dies.

Real sockets: a wsbridge pywsgi server in this process, a websockets client.
"""

from __future__ import annotations

import gc
import socket
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from wsbridge import Router, WebsocketConsumer, wrap
from wsbridge.consumers.http import SseConsumer
from wsbridge.drops import drop_counts
from wsbridge.testing import LongPollClient

router = Router()
#: Weak references to the consumers the server built, in order.
BUILT: list[weakref.ref[Any]] = []
#: Consumers a test keeps alive on purpose (to send after the end).
KEPT: list[WebsocketConsumer] = []


@router.websocket("echo/")
class Echo(WebsocketConsumer):
    groups = ["release.room"]

    def connect(self) -> None:
        BUILT.append(weakref.ref(self))
        self.accept()

    def receive(self, text_data=None, bytes_data=None) -> None:
        if text_data == "close":
            self.close()
            return
        if text_data == "keep me":
            KEPT.append(self)
        self.send(text_data=f"echo {text_data}")

    def release_note(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["text"])


@router.http("events/")
class Events(SseConsumer):
    keepalive_interval = None

    def connect(self) -> None:
        BUILT.append(weakref.ref(self))
        super().connect()
        self.send_event(data="hello")


@pytest.fixture
def server(gevent_server):
    return gevent_server(wrap(lambda e, s: [], router=router))


@pytest.fixture
def no_cyclic_collector() -> Iterator[None]:
    BUILT.clear()
    KEPT.clear()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        KEPT.clear()


def _freed(ref: weakref.ref[Any], seconds: float = 5.0) -> bool:
    # The server's greenlet lets go of its frame shortly after the close.
    deadline = time.monotonic() + seconds
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


@pytest.mark.parametrize("closer", ["client", "server"])
def test_an_ended_websocket_connection_is_freed_without_the_cyclic_collector(
    server, no_cyclic_collector, closer
):
    with connect(server.ws_url("/echo/")) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo hello"
        if closer == "server":
            ws.send("close")
            assert list(ws) == []  # the server's close ends the iteration
    assert len(BUILT) == 1
    assert _freed(BUILT[0]), "the consumer (and its runner and transport) is still in a cycle"


def test_many_ended_connections_are_all_freed(server, no_cyclic_collector):
    for n in range(20):
        with connect(server.ws_url("/echo/")) as ws:
            ws.send(str(n))
            assert ws.recv(timeout=5) == f"echo {n}"
    assert len(BUILT) == 20
    assert all(_freed(ref) for ref in BUILT)


def test_a_consumer_kept_past_its_connection_counts_what_it_sends_as_dropped(
    server, no_cyclic_collector
):
    with connect(server.ws_url("/echo/")) as ws:
        ws.send("keep me")
        assert ws.recv(timeout=5) == "echo keep me"
    consumer = KEPT[0]
    deadline = time.monotonic() + 5
    while getattr(consumer.base_send, "func", None) is None and time.monotonic() < deadline:
        time.sleep(0.01)  # released once the disconnect was handled
    before = drop_counts().get("connection_closed", 0)
    consumer.send(text_data="too late")
    assert drop_counts().get("connection_closed", 0) == before + 1


def test_an_ended_long_poll_session_is_freed_without_the_cyclic_collector(
    server, no_cyclic_collector
):
    with LongPollClient(f"http://127.0.0.1:{server.port}") as client:
        client.open("/echo/")
        client.send("hello")
        assert client.receive() == "echo hello"
    assert len(BUILT) == 1
    assert _freed(BUILT[0]), "the long-poll consumer is still in a cycle"


def test_an_ended_event_stream_is_freed_without_the_cyclic_collector(server, no_cyclic_collector):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /events/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while b"data: hello" not in got:
            chunk = sock.recv(4096)
            assert chunk, got
            got += chunk
    assert len(BUILT) == 1
    assert _freed(BUILT[0]), "the SSE consumer is still in a cycle"
