"""Tests of the Flask news example: in-process, and end to end through a real
``wsbridge serve`` with two real WebSocket clients and a real HTTP publish."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import gevent.subprocess
import pytest
from websockets.sync.client import connect

from examples.flask.app import MAX_TEXT, app
from examples.flask.consumers import router
from wsbridge.testing import Communicator, use_channel_layer

ROOT = Path(__file__).resolve().parents[2]
WSBRIDGE = str(Path(sys.executable).with_name("wsbridge"))


@pytest.fixture()
def layer() -> Iterator[object]:
    with use_channel_layer() as installed:
        yield installed


def test_a_flask_view_publishes_to_every_subscriber(layer):
    ann = Communicator(router, "/ws/news/")
    bob = Communicator(router, "/ws/news/")
    assert ann.connect() == (True, None) and bob.connect() == (True, None)
    answer = app.test_client().post("/news", data={"text": "  rain at noon "})
    assert answer.status_code == 202 and answer.json == {"published": "rain at noon"}
    assert ann.receive_json_from() == {"text": "rain at noon"}
    assert bob.receive_json_from() == {"text": "rain at noon"}
    bob.disconnect()
    app.test_client().post("/news", data={"text": "sun"})
    assert ann.receive_json_from() == {"text": "sun"}
    ann.disconnect()
    assert layer.group_channels("news") == []


@pytest.mark.parametrize("text", ["", "   ", "x" * (MAX_TEXT + 1)])
def test_a_bad_publish_is_a_400_and_reaches_no_one(layer, text):
    with Communicator(router, "/ws/news/") as comm:
        comm.connect()
        assert app.test_client().post("/news", data={"text": text}).status_code == 400
        assert comm.receive_nothing()


def test_a_subscriber_cannot_publish_over_the_socket(layer):
    with Communicator(router, "/ws/news/") as comm:
        comm.connect()
        comm.send_json_to({"text": "mine"})
        assert comm.receive_json_from() == {"error": "publish with POST /news"}


def start() -> tuple[gevent.subprocess.Popen, str]:
    proc = gevent.subprocess.Popen(
        [WSBRIDGE, "serve", "examples.flask.app", "--port", "0"],
        cwd=ROOT,
        stdout=gevent.subprocess.PIPE,
        stderr=gevent.subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = ""
    for _ in range(50):  # log lines may come before the one naming the port
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"http://(127\.0\.0\.1:\d+)/", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"the server did not start: {line!r} {proc.stdout.read()}")


def post(address: str, text: str) -> int:
    data = urllib.parse.urlencode({"text": text}).encode()
    try:
        with urllib.request.urlopen(f"http://{address}/news", data=data, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_two_real_clients_get_what_a_real_post_publishes():
    proc, address = start()
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=10) as page:
            assert page.status == 200 and b"new WebSocket(" in page.read()
        with (
            connect(f"ws://{address}/ws/news/", open_timeout=5) as ann,
            connect(f"ws://{address}/ws/news/", open_timeout=5) as bob,
        ):
            # a consumer joins its groups before it accepts: once the
            # handshake is answered, a publish reaches it
            assert post(address, "the news") == 202
            assert post(address, "") == 400
            assert post(address, "more news") == 202
            for client in (ann, bob):
                assert json.loads(client.recv(timeout=5)) == {"text": "the news"}
                assert json.loads(client.recv(timeout=5)) == {"text": "more news"}
        with pytest.raises(Exception, match="404"):
            connect(f"ws://{address}/ws/nowhere/", open_timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
