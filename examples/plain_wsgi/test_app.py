"""Tests of the plain-WSGI room chat: in-process with the Communicator, and end to end
through a real ``wsbridge serve`` with two real WebSocket clients."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import gevent.subprocess
import pytest
from websockets.sync.client import connect

from examples.plain_wsgi.app import application
from examples.plain_wsgi.consumers import router
from wsbridge.testing import Communicator, use_channel_layer

ROOT = Path(__file__).resolve().parents[2]
WSBRIDGE = str(Path(sys.executable).with_name("wsbridge"))


@pytest.fixture(autouse=True)
def fresh_layer() -> Iterator[None]:
    with use_channel_layer():
        yield


def join(room: str, name: str) -> Communicator:
    comm = Communicator(router, f"/ws/chat/{room}/?name={name}")
    assert comm.connect() == (True, None)
    assert comm.receive_json_from() == {"type": "joined", "user": name}
    return comm


def test_members_of_a_room_receive_each_others_messages_and_no_one_else(fresh_layer):
    ann, bob = join("lobby", "ann"), join("lobby", "bob")
    assert ann.receive_json_from() == {"type": "joined", "user": "bob"}
    other = join("elsewhere", "eve")
    ann.send_json_to({"text": "hello room"})
    expected = {"type": "message", "user": "ann", "text": "hello room"}
    assert ann.receive_json_from() == expected
    assert bob.receive_json_from() == expected
    assert other.receive_nothing()
    bob.disconnect()
    assert ann.receive_json_from() == {"type": "left", "user": "bob"}
    ann.disconnect(), other.disconnect()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", "send JSON"),
        ('{"text": ""}', "non-empty"),
        ('["x"]', "non-empty"),
        (json.dumps({"text": "x" * 501}), "at most 500"),
    ],
)
def test_bad_input_gets_an_error_message_and_the_socket_stays_open(fresh_layer, frame, error):
    comm = join("lobby", "ann")
    comm.send_to(text_data=frame)
    answer = comm.receive_json_from()
    assert answer["type"] == "error" and error in answer["error"]
    comm.send_json_to({"text": "still here"})
    assert comm.receive_json_from()["text"] == "still here"
    comm.disconnect()


def test_echo_consumer(fresh_layer):
    with Communicator(router, "/ws/echo/") as comm:
        comm.connect()
        comm.send_to(bytes_data=b"\x01\x02")
        assert comm.receive_from() == b"\x01\x02"


def test_plain_http_still_goes_to_the_site():
    for path, status in (("/", "200 OK"), ("/nothing", "404 Not Found")):
        environ: dict = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        seen: list[str] = []
        body = b"".join(application(environ, lambda s, h, *a, seen=seen: seen.append(s)))
        assert seen == [status]
        if path == "/":
            assert b"new WebSocket(" in body and b"textContent" in body


def start(argv: list[str]) -> tuple[gevent.subprocess.Popen, str]:
    proc = gevent.subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=gevent.subprocess.PIPE,
        stderr=gevent.subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for _ in range(50):  # log lines may come before the one naming the port
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"http://(127\.0\.0\.1:\d+)/", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"the server did not start: {line!r} {proc.stdout.read()}")


def stop(proc: gevent.subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def chat_between_two_real_clients(address: str) -> None:
    with connect(f"ws://{address}/ws/chat/lobby/?name=ann", open_timeout=5) as ann:
        assert json.loads(ann.recv(timeout=5)) == {"type": "joined", "user": "ann"}
        with connect(f"ws://{address}/ws/chat/lobby/?name=bob", origin=f"http://{address}") as bob:
            assert json.loads(bob.recv(timeout=5)) == {"type": "joined", "user": "bob"}
            assert json.loads(ann.recv(timeout=5)) == {"type": "joined", "user": "bob"}
            bob.send(json.dumps({"text": "hi ann"}))
            expected = {"type": "message", "user": "bob", "text": "hi ann"}
            assert json.loads(ann.recv(timeout=5)) == expected
            assert json.loads(bob.recv(timeout=5)) == expected
        assert json.loads(ann.recv(timeout=5)) == {"type": "left", "user": "bob"}


@pytest.mark.slow
def test_chat_between_two_real_websocket_clients_through_wsbridge_serve():
    proc, address = start([WSBRIDGE, "serve", "examples.plain_wsgi.app", "--port", "0"])
    try:
        chat_between_two_real_clients(address)
        # An unrouted WebSocket path is refused at the handshake; another origin too.
        with pytest.raises(Exception, match="404"):
            connect(f"ws://{address}/ws/nowhere/", open_timeout=5)
        with pytest.raises(Exception, match="403"):
            connect(f"ws://{address}/ws/echo/", origin="http://evil.example", open_timeout=5)
    finally:
        stop(proc)


@pytest.mark.slow
def test_one_command_run_of_app_py():
    proc, address = start([sys.executable, "examples/plain_wsgi/app.py", "--port", "0"])
    try:
        chat_between_two_real_clients(address)
    finally:
        stop(proc)
