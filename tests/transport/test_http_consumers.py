"""HTTP consumers over a real gevent server: held answers, streams, SSE, and bad input.

Each test serves ``wrap(site, router=ROUTES)`` with wsbridge's own pywsgi
server in this process on a free loopback port, and talks raw HTTP/1.1 to it
over gevent sockets (so the server runs while the test waits). Leak checks
count live greenlets (gc) and open fds (/proc/self/fd) before and after.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.subprocess
import greenlet
import pytest
from gevent import socket

from wsbridge.consumers.http import HttpConsumer, SseConsumer, format_sse
from wsbridge.consumers.message import Group
from wsbridge.consumers.routing import Router
from wsbridge.exceptions import DenyConnection
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import HttpCommunicator
from wsbridge.transport import limits
from wsbridge.transport.http import HttpOptions
from wsbridge.transport.server import make_server
from wsbridge.transport.wsgi import wrap

ROUTES = Router()
#: (consumer, detail) appended by disconnect() handlers.
DISCONNECTS: list[tuple[str, Any]] = []


@ROUTES.http("held/<str:topic>/")
class Held(HttpConsumer):
    def handle(self, body: bytes) -> None:
        self.topic = self.scope["url_route"]["kwargs"]["topic"]
        self.channel_layer.group_add(f"held.{self.topic}", self.channel_name)

    def held_event(self, event: dict[str, Any]) -> None:
        self.send_response(200, event["text"], headers={"x-topic": self.topic})

    def disconnect(self) -> None:
        DISCONNECTS.append(("held", self.topic))


@ROUTES.http("echo/")
class Echo(HttpConsumer):
    max_body_size = 1000

    def handle(self, body: bytes) -> None:
        if self.get_header("x-deny"):
            raise DenyConnection()
        self.send_json(
            {
                "method": self.method,
                "path": self.scope["path"],
                "body": body.decode(),
                "query": self.query,
                "cookies": self.scope["cookies"],
                "transport": self.scope["transport"],
            }
        )


@ROUTES.http("stream/")
class Stream(HttpConsumer):
    groups = ["stream"]

    def handle(self, body: bytes) -> None:
        self.send_headers(200, {"content-type": "text/plain"})
        self.send_body("start\n", more_body=True)

    def stream_piece(self, event: dict[str, Any]) -> None:
        self.send_body(event["text"], more_body=not event.get("last"))

    def disconnect(self) -> None:
        DISCONNECTS.append(("stream", None))


@ROUTES.http("sse/<str:room>/")
class Feed(SseConsumer):
    keepalive_interval = 0.2
    retry = 1500

    def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.channel_layer.group_add(f"sse.{self.room}", self.channel_name)
        if self.last_event_id is not None:
            self.send_event(f"resumed after {self.last_event_id}", event="resume")

    def sse_item(self, event: dict[str, Any]) -> None:
        self.send_event(event["data"], id=event["id"], event=event.get("event"))

    def disconnect(self) -> None:
        DISCONNECTS.append(("sse", self.room))


@ROUTES.http("never/")
class Never(HttpConsumer):
    def handle(self, body: bytes) -> None:
        pass  # nobody answers: the hold timeout does

    def disconnect(self) -> None:
        DISCONNECTS.append(("never", None))


@ROUTES.http("never-204/")
class NeverNoContent(HttpConsumer):
    hold_timeout = 0.2
    timeout_status = 204

    def handle(self, body: bytes) -> None:
        pass


@ROUTES.http("stuck/")
class Stuck(HttpConsumer):
    def handle(self, body: bytes) -> None:
        gevent.sleep(60)  # a handler that blocks: answered by the timeout, then killed


@ROUTES.http("boom/")
class Boom(HttpConsumer):
    def handle(self, body: bytes) -> None:
        raise RuntimeError("boom in handle")


@ROUTES.http("boom-mid-stream/")
class BoomMidStream(HttpConsumer):
    groups = ["boom-mid"]

    def handle(self, body: bytes) -> None:
        self.send_headers(200, {"content-type": "text/plain"})
        self.send_body(b"partial", more_body=True)

    def boom_now(self, event: dict[str, Any]) -> None:
        raise RuntimeError("boom mid-stream")


@ROUTES.http("flood/")
class Flood(HttpConsumer):
    def handle(self, body: bytes) -> None:
        self.send_headers(200, {"content-type": "application/octet-stream"})
        for _ in range(200):  # 12.8 MB for a client that reads nothing
            self.send_body(b"x" * 65536, more_body=True)
        self.send_body(b"", more_body=False)


@ROUTES.http("fn/<int:n>/")
def fn_answer(message: Any) -> str:
    return f"fn {message['method']} {message.scope['url_route']['kwargs']['n']}"


@ROUTES.http("fn-held/")
def fn_held(message: Any) -> None:
    Group("fn-held", channel_layer=message.channel_layer).add(message.reply_channel)


def site(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"site"]


# -- the server and a raw HTTP client ---------------------------------------------------


@dataclass
class Site:
    port: int
    layer: MemoryLayer
    bridge: Any


@pytest.fixture
def server() -> Iterator[Site]:
    DISCONNECTS.clear()
    limits.reset_refusal_counts()  # each test sees its own refusals' first WARNING line
    layer = MemoryLayer()
    bridge = wrap(site, router=ROUTES, layer=layer)
    bridge.http = HttpOptions(hold_timeout=0.3, body_timeout=0.5, grace=0.3, write_timeout=1.0)
    srv = make_server(bridge, "127.0.0.1", 0)
    srv.start()
    try:
        yield Site(srv.server_port, layer, bridge)
    finally:
        srv.stop(timeout=1)
        # consumers of requests cut by the stop finish now, not in the next test
        wait_for(lambda: layer.stats()["attached"] == 0, 2, "consumers to finish")
        layer.close()


class Client:
    """HTTP/1.1 over one gevent socket; every read is bounded in time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        length: int | None = None,
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or length is not None:
            lines.append(f"Content-Length: {len(body) if length is None else length}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _fill(self, timeout: float) -> bool:
        with gevent.Timeout(timeout, TimeoutError("the server sent nothing in time")):
            data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def read_until(self, marker: bytes, timeout: float = 3) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if not self._fill(max(0.01, deadline - time.monotonic())):
                raise EOFError(f"connection closed before {marker!r}; got {self.buf!r}")
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def read_exact(self, n: int, timeout: float = 3) -> bytes:
        while len(self.buf) < n:
            if not self._fill(timeout):
                raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self, timeout: float = 3) -> tuple[int, dict[str, str]]:
        head = self.read_until(b"\r\n\r\n", timeout).decode("latin-1")
        status_line, *lines = head.strip().split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def read_chunk(self, timeout: float = 3) -> bytes | None:
        """One chunk of a chunked body; None for the terminating chunk."""
        size = int(self.read_until(b"\r\n", timeout)[:-2], 16)
        data = self.read_exact(size + 2, timeout)[:-2]
        return data if size else None

    def read_response(self, timeout: float = 3) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.read_head(timeout)
        if "content-length" in headers:
            return status, headers, self.read_exact(int(headers["content-length"]), timeout)
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while (chunk := self.read_chunk(timeout)) is not None:
                parts.append(chunk)
            return status, headers, b"".join(parts)
        return status, headers, b""

    def request(self, method: str, path: str, body: bytes = b"", **kw: Any) -> tuple:
        self.send(method, path, body, **kw)
        return self.read_response()

    def at_eof(self, timeout: float = 3) -> bool:
        """True once the server closed the connection (after any buffered bytes)."""
        try:
            return not self._fill(timeout)
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def wait_for(condition: Callable[[], Any], timeout: float = 3, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.01)


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and not g.dead)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks(server: Site) -> Iterator[None]:
    """Fails the test if greenlets or fds outlive its clients."""
    gevent.sleep(0)
    greenlets, fds = live_greenlets(), open_fds()
    yield
    wait_for(
        lambda: live_greenlets() <= greenlets and open_fds() <= fds,
        3,
        f"greenlets <= {greenlets} and fds <= {fds} "
        f"(now {live_greenlets()} greenlets, {open_fds()} fds)",
    )
    assert server.layer.stats()["attached"] == 0
    assert server.layer.stats()["groups"] == {}


# -- answering now, later, streaming ----------------------------------------------------------


def test_unrouted_paths_still_reach_the_site(server: Site) -> None:
    c = Client(server.port)
    status, _, body = c.request("GET", "/not-a-consumer/")
    assert (status, body) == (200, b"site")
    c.close()


def test_immediate_answer_carries_the_request_scope_and_body(server: Site) -> None:
    c = Client(server.port)
    status, headers, body = c.request(
        "POST", "/echo/?a=1&a=2&b=x", b"hello", headers={"Cookie": "sid=abc; theme=dark"}
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "method": "POST",
        "path": "/echo/",
        "body": "hello",
        "query": {"a": ["1", "2"], "b": ["x"]},
        "cookies": {"sid": "abc", "theme": "dark"},
        "transport": "http",
    }
    # the connection stays usable for the next request (keep-alive)
    status, _, body = c.request("GET", "/not-a-consumer/")
    assert (status, body) == (200, b"site")
    c.close()


def test_deny_connection_answers_403(server: Site) -> None:
    c = Client(server.port)
    status, _, _ = c.request("GET", "/echo/", headers={"X-Deny": "1"})
    assert status == 403
    c.close()


def test_held_request_is_answered_by_a_group_event(server: Site, no_leaks: None) -> None:
    clients = [Client(server.port) for _ in range(3)]
    for c in clients:
        c.send("GET", "/held/news/")
    other = Client(server.port)
    other.send("GET", "/held/sport/")
    wait_for(lambda: len(server.layer.group_channels("held.news")) == 3, what="3 held requests")
    server.layer.group_send("held.news", {"type": "held.event", "text": "extra!"})
    for c in clients:
        status, headers, body = c.read_response()
        assert (status, headers["x-topic"], body) == (200, "news", b"extra!")
    # the other topic is still held, and answered on its own event
    assert server.layer.group_channels("held.sport")
    server.layer.group_send("held.sport", {"type": "held.event", "text": "goal"})
    assert other.read_response()[2] == b"goal"
    wait_for(lambda: len(DISCONNECTS) == 4, what="disconnect() of all four")
    assert sorted(DISCONNECTS) == [("held", "news")] * 3 + [("held", "sport")]
    for c in [*clients, other]:
        c.close()


def test_streamed_body_arrives_chunk_by_chunk(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    c.send("GET", "/stream/")
    status, headers = c.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert c.read_chunk() == b"start\n"
    for piece in ("one\n", "two\n"):
        server.layer.group_send("stream", {"type": "stream.piece", "text": piece})
        assert c.read_chunk() == piece.encode()
    server.layer.group_send("stream", {"type": "stream.piece", "text": "end\n", "last": True})
    assert c.read_chunk() == b"end\n"
    assert c.read_chunk() is None
    wait_for(lambda: DISCONNECTS == [("stream", None)], what="disconnect()")
    c.close()


def test_function_consumers_answer_by_return_or_by_reply_channel(
    server: Site, no_leaks: None
) -> None:
    c = Client(server.port)
    assert c.request("PUT", "/fn/42/")[::2] == (200, b"fn PUT 42")
    c.send("GET", "/fn-held/")
    wait_for(lambda: server.layer.group_channels("fn-held"), what="the held function request")
    Group("fn-held", channel_layer=server.layer).send({"status": 201, "content": b"made"})
    assert c.read_response()[::2] == (201, b"made")
    c.close()


class Waiter(HttpConsumer):
    groups = ["waiters"]

    def waiters_done(self, event: dict[str, Any]) -> None:
        self.send_response(200, event["text"], {"X-Done": "yes"})


def test_a_consumer_with_groups_holds_by_default_and_answers_on_the_event() -> None:
    layer = MemoryLayer()
    comm = HttpCommunicator(Waiter, "GET", "/wait/", channel_layer=layer)
    comm.send_request()
    assert comm.receive_nothing()
    layer.group_send("waiters", {"type": "waiters.done", "text": "done"})
    assert comm.get_response() == {
        "status": 200,
        "headers": [
            (b"x-done", b"yes"),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"4"),
        ],
        "body": b"done",
    }
    comm.disconnect()
    assert layer.group_channels("waiters") == []


class Misuse(HttpConsumer):
    def handle(self, body: bytes) -> None:
        if body == b"body-first":
            self.send_body(b"x")
        else:
            self.send_headers(200, {"x-bad": "a\r\nSet-Cookie: evil=1"})


@pytest.mark.parametrize("body", [b"body-first", b"header-injection"])
def test_misusing_the_response_api_fails_that_request_with_a_clear_error(body: bytes) -> None:
    comm = HttpCommunicator(Misuse, "POST", "/misuse/", body, channel_layer=MemoryLayer())
    comm.send_request()
    assert comm.connection.wait(1) and comm.connection.failed
    assert isinstance(comm.connection.error, (RuntimeError, ValueError))
    assert comm.receive_nothing()


# -- Server-Sent Events -------------------------------------------------------------------


def test_format_sse_splits_lines_and_orders_fields() -> None:
    assert format_sse("a\nb\r\nc", event="up", id=7, retry=10) == (
        b"retry: 10\nid: 7\nevent: up\ndata: a\ndata: b\ndata: c\n\n"
    )
    assert format_sse(comment="ping") == b": ping\n\n"
    assert format_sse(" lead") == b"data:  lead\n\n"
    for bad in ({"id": "a\nb"}, {"id": "a\x00"}, {"event": "x\ry"}, {"retry": -1}, {}):
        with pytest.raises(ValueError):
            format_sse(**bad)


def test_sse_stream_sends_events_keepalives_and_detects_a_gone_client(
    server: Site, no_leaks: None
) -> None:
    c = Client(server.port)
    c.send("GET", "/sse/lobby/", headers={"Accept": "text/event-stream"})
    status, headers = c.read_head()
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert c.read_chunk() == b"retry: 1500\n\n"
    server.layer.group_send("sse.lobby", {"type": "sse.item", "data": "one\ntwo", "id": "5"})
    assert c.read_chunk() == b"id: 5\ndata: one\ndata: two\n\n"
    assert c.read_chunk(timeout=1) == b": keep-alive\n\n"  # after 0.2 s of silence
    c.close()
    wait_for(lambda: DISCONNECTS == [("sse", "lobby")], what="disconnect() after the client left")


def test_sse_hands_last_event_id_of_a_reconnecting_client_to_connect(server: Site) -> None:
    c = Client(server.port)
    c.send("GET", "/sse/lobby/", headers={"Last-Event-ID": "41"})
    c.read_head()
    assert c.read_chunk() == b"retry: 1500\n\n"
    assert c.read_chunk() == b"event: resume\ndata: resumed after 41\n\n"
    c.close()


def test_sse_consumer_through_the_communicator() -> None:
    layer = MemoryLayer()
    route = {"url_route": {"args": (), "kwargs": {"room": "x"}}}
    comm = HttpCommunicator(
        Feed, "GET", "/sse/x/", headers=[("Last-Event-ID", "3")], channel_layer=layer, scope=route
    )
    comm.send_request()
    status, headers = comm.receive_start()
    assert status == 200 and (b"content-type", b"text/event-stream; charset=utf-8") in headers
    assert comm.receive_body() == b"retry: 1500\n\n"
    assert comm.receive_body() == b"event: resume\ndata: resumed after 3\n\n"
    layer.group_send("sse.x", {"type": "sse.item", "data": "hi", "id": 4})
    assert comm.receive_body().endswith(b"id: 4\ndata: hi\n\n")
    comm.disconnect()
    assert layer.stats()["groups"] == {}


# -- bad input ------------------------------------------------------------------------------


def test_hold_timeout_answers_504_and_runs_disconnect(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    started = time.monotonic()
    status, _, body = c.request("GET", "/never/")
    assert (status, body) == (504, b"Gateway Timeout\n")
    assert time.monotonic() - started >= 0.25
    wait_for(lambda: DISCONNECTS == [("never", None)], what="disconnect()")
    c.close()


def test_hold_timeout_status_is_configurable_per_consumer(server: Site) -> None:
    c = Client(server.port)
    c.send("GET", "/never-204/")
    status, headers = c.read_head()
    assert status == 204
    c.close()


def test_stuck_consumer_is_answered_then_killed(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    assert c.request("GET", "/stuck/")[0] == 504
    c.close()
    # no_leaks waits for the handler's greenlet to be gone (killed after the grace period)


def test_client_gone_while_held_runs_disconnect_and_leaves_groups(
    server: Site, no_leaks: None
) -> None:
    c = Client(server.port)
    c.send("GET", "/held/gone/")
    wait_for(lambda: server.layer.group_channels("held.gone"), what="the held request")
    c.close()
    wait_for(lambda: DISCONNECTS == [("held", "gone")], timeout=1, what="disconnect() on EOF")
    assert server.layer.group_send("held.gone", {"type": "held.event", "text": "late"}) == 0


def test_client_gone_mid_stream_runs_disconnect(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    c.send("GET", "/stream/")
    c.read_head()
    assert c.read_chunk() == b"start\n"
    c.close()
    wait_for(lambda: DISCONNECTS == [("stream", None)], timeout=1, what="disconnect() mid-stream")


def test_body_over_the_limit_is_refused_with_413_without_reading_it(server: Site) -> None:
    c = Client(server.port)
    # declared too large: refused before a byte of it is read
    c.send("POST", "/echo/", b"", length=10_000_000)
    status, headers, _ = c.read_response()
    assert status == 413 and headers["connection"] == "close"
    assert c.at_eof()
    c.close()


def test_chunked_body_over_the_limit_is_refused_while_reading(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    head = b"POST /echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    c.sock.sendall(head + b"400\r\n" + b"y" * 1024 + b"\r\n")  # 1024 > Echo's 1000
    assert c.read_response()[0] == 413
    c.close()


def test_truncated_body_is_400(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    c.send("POST", "/echo/", b"only-this", length=500)
    c.sock.shutdown(socket.SHUT_WR)
    assert c.read_response()[0] == 400
    c.close()


def test_body_that_stalls_is_408(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    c.send("POST", "/echo/", b"slow", length=500)
    assert c.read_response(timeout=3)[0] == 408
    c.close()


def test_consumer_that_raises_gets_500_alone_and_one_traceback(
    server: Site, no_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:
    bystander = Client(server.port)
    bystander.send("GET", "/held/calm/")
    wait_for(lambda: server.layer.group_channels("held.calm"), what="the bystander")
    c = Client(server.port)
    with caplog.at_level(logging.ERROR):
        status, _, body = c.request("GET", "/boom/")
    assert status == 500
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "boom in handle" in str(tracebacks[0].exc_info[1])
    # the same connection and every other request go on
    assert c.request("GET", "/fn/1/")[::2] == (200, b"fn GET 1")
    server.layer.group_send("held.calm", {"type": "held.event", "text": "still here"})
    assert bystander.read_response()[2] == b"still here"
    c.close()
    bystander.close()


def test_consumer_that_raises_mid_stream_cuts_the_body(server: Site, no_leaks: None) -> None:
    c = Client(server.port)
    c.send("GET", "/boom-mid-stream/")
    assert c.read_head()[0] == 200
    assert c.read_chunk() == b"partial"
    server.layer.group_send("boom-mid", {"type": "boom.now"})
    # no terminating chunk: the client can tell the body is incomplete
    assert c.at_eof()
    assert c.buf == b""
    c.close()


def test_fast_stream_from_one_handler_reaches_a_reading_client_whole(
    server: Site, no_leaks: None
) -> None:
    server.bridge.http = HttpOptions(max_pending=256 * 1024, write_timeout=2, grace=0.3)
    c = Client(server.port)
    status, _, body = c.request("GET", "/flood/")
    assert status == 200 and len(body) == 200 * 65536
    c.close()


def test_client_that_reads_nothing_is_dropped_not_buffered(
    server: Site, no_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:
    server.bridge.http = HttpOptions(max_pending=256 * 1024, write_timeout=0.5, grace=0.3)
    fds = open_fds()
    c = Client(server.port)
    with caplog.at_level(logging.WARNING, logger="wsbridge.transport.http"):
        c.send("GET", "/flood/")
        wait_for(
            lambda: "slowly" in caplog.text or "read nothing" in caplog.text,
            what="the server to give up",
        )
    # the server closed its side (only the client's socket is left open) instead
    # of queueing 12.8 MB for a client that never reads
    wait_for(lambda: open_fds() == fds + 1, what="the server to close the connection")
    c.close()
    counts = limits.refusal_counts()  # counted where status and the metrics show it
    assert counts.get("http_slow_reader", 0) + counts.get("http_write_timeout", 0) == 1


# -- under gunicorn's gevent worker -------------------------------------------------------------


@pytest.fixture
def gunicorn() -> Iterator[int]:
    proc = gevent.subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--chdir",
            os.path.dirname(__file__),
            "--graceful-timeout",
            "2",
            "http_app:application",
        ],
        stderr=gevent.subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        with gevent.Timeout(20, TimeoutError("gunicorn did not start")):
            while port is None:
                line = proc.stderr.readline()
                assert line, "gunicorn exited"
                found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
                port = int(found.group(1)) if found else None
            while "Booting worker" not in line:
                line = proc.stderr.readline()
                assert line, "gunicorn exited"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except gevent.subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get_json(port: int, path: str) -> Any:
    client = Client(port)
    try:
        return json.loads(client.request("GET", path)[2])
    finally:
        client.close()


def test_held_request_and_sse_under_gunicorn_gevent_worker(gunicorn: int) -> None:
    held, sse, gone = Client(gunicorn), Client(gunicorn), Client(gunicorn)
    held.send("GET", "/held/")
    sse.send("GET", "/sse/")
    assert sse.read_head()[0] == 200 and sse.read_chunk() == b":\n\n"
    gone.send("GET", "/held/")
    wait_for(lambda: get_json(gunicorn, "/")["attached"] == 3, 10, "three consumers")
    gone.close()  # noticed through gunicorn's socket while held
    wait_for(lambda: get_json(gunicorn, "/")["ended"] == ["held"], 5, "disconnect() of the gone")
    get_json(gunicorn, "/send?extra")
    assert held.read_response()[::2] == (200, b"extra")
    assert sse.read_chunk() == b"id: 1\ndata: extra\n\n"
    held.close(), sse.close()
