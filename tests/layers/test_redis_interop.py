"""channels_redis 4.x interop against the real ``channels`` and ``channels_redis``.

The Channels side runs in a subprocess (asyncio), the wsbridge side here (gevent),
both on the shared Redis with one fresh prefix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wsbridge.consumers.consumer import JsonWebsocketConsumer
from wsbridge.testing import Communicator

from .conformance import Collector
from .redis_helpers import SHARED_REDIS, make_layer_factory

pytestmark = pytest.mark.redis

PEER = str(Path(__file__).with_name("channels_peer.py"))


@pytest.fixture
def make():
    with make_layer_factory(compat="channels_redis") as factory:
        yield factory


class Peer:
    """The Channels 4 subprocess; lines it prints are read one by one."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, PEER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        from gevent import Timeout

        with Timeout(30, AssertionError("the Channels peer said nothing")):
            text = self.process.stdout.readline()
        if not text:
            raise AssertionError(f"the Channels peer ended: {self.process.stderr.read()}")
        return text.strip()

    def finish(self) -> None:
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        assert self.process.returncode == 0, self.process.stderr.read()


def test_a_channels_consumer_receives_a_wsbridge_group_send(make):
    layer = make()
    peer = Peer("consumer", SHARED_REDIS, make.prefix, "interop.room")
    assert peer.line() == "READY"
    assert layer.group_channels("interop.room")  # the Channels consumer's channel
    assert layer.group_send("interop.room", {"type": "chat.message", "text": "from wsbridge"}) == 0
    assert json.loads(peer.line()) == {"text": "from wsbridge", "via": "channels"}
    peer.finish()


class Chat(JsonWebsocketConsumer):
    groups = ["interop.lobby"]

    def chat_message(self, event):
        self.send_json({"text": event["text"], "via": "wsbridge"})


def test_a_wsbridge_consumer_receives_a_channels_group_send(make):
    layer = make()
    communicator = Communicator(Chat, "/ws/chat/", channel_layer=layer)
    assert communicator.connect()[0]
    peer = Peer("group_send", SHARED_REDIS, make.prefix, "interop.lobby", "from channels")
    assert peer.line() == "SENT"
    peer.finish()
    assert communicator.receive_json_from(timeout=5) == {"text": "from channels", "via": "wsbridge"}
    communicator.disconnect()
    assert layer.group_channels("interop.lobby") == []


def test_both_sides_in_one_group_each_receive_the_other_sides_broadcast(make):
    layer = make()
    mine = layer.new_channel()
    got = Collector()
    layer.attach(mine, got)
    layer.group_add("interop.both", mine)
    peer = Peer("consumer", SHARED_REDIS, make.prefix, "interop.both")
    assert peer.line() == "READY"
    assert len(layer.group_channels("interop.both")) == 2
    layer.group_send("interop.both", {"type": "chat.message", "text": "to all"})
    assert json.loads(peer.line())["text"] == "to all"
    assert got.wait(1)[0] == {"type": "chat.message", "text": "to all"}
    peer.finish()


def test_direct_messages_to_specific_channels_both_ways(make):
    layer = make()
    peer = Peer("new_channel", SHARED_REDIS, make.prefix)
    theirs = peer.line()
    assert "!" in theirs
    layer.send(theirs, {"type": "chat.message", "text": "direct"})
    assert json.loads(peer.line()) == {"type": "chat.message", "text": "direct"}
    peer.finish()

    mine = layer.new_channel()
    got = Collector()
    layer.attach(mine, got)
    sender = Peer("send", SHARED_REDIS, make.prefix, mine, "back")
    assert sender.line() == "SENT"
    sender.finish()
    assert got.wait(1)[0] == {"type": "chat.message", "text": "back"}


def test_named_channels_both_ways(make):
    layer = make()
    layer.send("interop.tasks", {"type": "chat.message", "text": "job"})
    peer = Peer("receive", SHARED_REDIS, make.prefix, "interop.tasks")
    assert json.loads(peer.line()) == {"type": "chat.message", "text": "job"}
    peer.finish()
    sender = Peer("send", SHARED_REDIS, make.prefix, "interop.jobs", "their job")
    assert sender.line() == "SENT"
    sender.finish()
    assert layer.receive("interop.jobs", timeout=5) == {"type": "chat.message", "text": "their job"}
