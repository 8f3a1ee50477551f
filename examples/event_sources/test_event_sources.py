"""Tests of the event-source examples: in-process (real UDP socket, HttpCommunicator,
a real Worker), and end to end through ``app.py`` in its own process."""

from __future__ import annotations

import os
import socket as stdlib_socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import gevent
import pytest
from gevent import socket

from examples.event_sources import sms
from examples.event_sources.app import router
from examples.event_sources.udp import MAX_DATAGRAM, DatagramSource, parse_datagram
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import HttpCommunicator
from wsbridge.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-for-tests"


def open_dashboard(layer: MemoryLayer, topics: str = "alerts") -> HttpCommunicator:
    comm = HttpCommunicator(router, "GET", f"/events/?topics={topics}", channel_layer=layer)
    comm.send_request()
    assert comm.receive_start()[0] == 200
    assert comm.receive_body() == b":\n\n"  # the stream is open
    return comm


def wait_for(condition, timeout: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)


# -- UDP ------------------------------------------------------------------------------------


def test_parse_datagram_maps_topic_to_group_and_refuses_bad_ones() -> None:
    assert parse_datagram(b"alerts disk full", ("127.0.0.1", 5)) == (
        "udp.alerts",
        {
            "type": "udp.datagram",
            "topic": "alerts",
            "text": "disk full",
            "sender": ["127.0.0.1", 5],
        },
    )
    for bad in (
        b"",
        b"\xff\xfe oops",
        b"bad!topic text",
        b"a" * 51 + b" x",
        b"alerts " + b"x" * MAX_DATAGRAM,
    ):
        assert parse_datagram(bad, ("127.0.0.1", 5)) is None


@pytest.fixture
def udp() -> Iterator[tuple[DatagramSource, MemoryLayer]]:
    layer = MemoryLayer()
    source = DatagramSource(("127.0.0.1", 0), layer)
    source.start()
    try:
        yield source, layer
    finally:
        source.stop()
        layer.close()


def test_datagrams_reach_the_consumers_of_their_topic_and_bad_ones_are_dropped(udp) -> None:
    source, layer = udp
    alerts, news = open_dashboard(layer, "alerts"), open_dashboard(layer, "news")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", source.server_port)
    for junk in (b"\xff\xfe", b"no/topic here", b"alerts " + b"x" * MAX_DATAGRAM):
        sender.sendto(junk, target)
    sender.sendto(b"alerts disk almost full", target)
    assert alerts.receive_body() == (
        b'event: udp\ndata: {"topic": "alerts", "text": "disk almost full"}\n\n'
    )
    assert news.receive_nothing()
    wait_for(lambda: source.dropped == 3 and source.delivered == 1)
    sender.close()
    alerts.disconnect(), news.disconnect()
    assert layer.stats()["groups"] == {}


# -- the SMS webhook -------------------------------------------------------------------------


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sms.SmsWebhook, "secret", SECRET)
    return SECRET


def webhook(
    layer: MemoryLayer, body: bytes, *, method: str = "POST", signature: str | None = None
) -> int:
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if signature is None:
        signature = sms.sign(SECRET, body)
    headers.append(("X-Sms-Signature", signature))
    comm = HttpCommunicator(
        router, method, "/hooks/sms/", body, headers=headers, channel_layer=layer
    )
    status = comm.get_response()["status"]
    comm.disconnect()
    return status


SMS = urlencode(
    {"MessageSid": "SM1", "From": "+15550001", "To": "+15550002", "Body": "hello\nthere"}
).encode()


def test_signed_sms_goes_to_the_channel_and_gets_204(secret: str) -> None:
    layer = MemoryLayer()
    assert webhook(layer, SMS) == 204
    assert layer.receive("sms.received", timeout=1) == {
        "sid": "SM1",
        "from": "+15550001",
        "to": "+15550002",
        "body": "hello\nthere",
    }


@pytest.mark.parametrize(
    ("method", "body", "signature", "status"),
    [
        ("POST", SMS, "0" * 64, 403),
        ("POST", SMS, "", 403),
        ("GET", b"", None, 405),
        ("POST", b"From=%2B1&To=%2B2", None, 400),
    ],
)
def test_bad_webhook_requests_are_refused_and_nothing_is_sent(
    secret: str, method: str, body: bytes, signature: str | None, status: int
) -> None:
    layer = MemoryLayer()
    assert webhook(layer, body, method=method, signature=signature) == status
    assert layer.receive("sms.received", timeout=0.05) is None


def test_a_full_channel_answers_503_so_the_gateway_retries(secret: str) -> None:
    layer = MemoryLayer(capacity=1)
    assert webhook(layer, SMS) == 204
    assert webhook(layer, SMS) == 503


def test_the_background_consumer_tells_every_dashboard(secret: str) -> None:
    layer = MemoryLayer()
    worker = Worker(layer, router).start()
    try:
        board = open_dashboard(layer)
        assert webhook(layer, SMS) == 204
        assert board.receive_body(timeout=3) == (
            b'id: SM1\nevent: sms\ndata: {"from": "+15550001", "body": "hello\\nthere"}\n\n'
        )
        assert sms.INBOX[-1]["sid"] == "SM1"
        board.disconnect()
    finally:
        worker.stop(timeout=3)


# -- end to end: app.py in its own process ---------------------------------------------------


@pytest.fixture
def app_process() -> Iterator[tuple[int, int]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "event_sources" / "app.py"),
            "--port",
            "0",
            "--udp-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SMS_WEBHOOK_SECRET": SECRET},
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "udp://" in line, f"app.py did not start: {line!r}"
        http_port = int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])
        udp_port = int(line.split("udp://")[1].strip().rsplit(":", 1)[1])
        yield http_port, udp_port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_events(sock: stdlib_socket.socket, wanted: int, timeout: float = 5) -> list[str]:
    """Read SSE bytes until ``wanted`` events (blank-line ended, not comments) arrived."""
    sock.settimeout(timeout)
    data = b""
    while True:
        blocks = [b for b in data.replace(b"\r\n", b"\n").split(b"\n\n") if b"event:" in b]
        if len(blocks) >= wanted:
            return [b.decode() for b in blocks]
        chunk = sock.recv(65536)
        assert chunk, "the stream ended"
        data += chunk


def test_datagram_and_webhook_reach_an_open_stream_end_to_end(app_process) -> None:
    http_port, udp_port = app_process
    stream = stdlib_socket.create_connection(("127.0.0.1", http_port), timeout=5)
    stream.sendall(
        b"GET /events/?topics=alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Accept: text/event-stream\r\n\r\n"
    )
    stream.settimeout(5)
    assert stream.recv(4096).startswith(b"HTTP/1.1 200 OK")
    # the dashboard is in its groups once its stream is open; send both kinds
    udp_sender = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    udp_sender.sendto(b"alerts over udp", ("127.0.0.1", udp_port))
    udp_sender.close()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/hooks/sms/",
        data=SMS,
        headers={"X-Sms-Signature": sms.sign(SECRET, SMS)},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 204
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{http_port}/hooks/sms/",
                data=SMS,
                headers={"X-Sms-Signature": "forged"},
            ),
            timeout=5,
        )
    assert refused.value.code == 403
    events = read_events(stream, 2)
    assert any("event: udp" in e and '"text": "over udp"' in e for e in events)
    assert any("event: sms" in e and "id: SM1" in e for e in events)
    stream.close()
