"""Every drop is visible: a WARNING (rate-limited, with the running count), a counter
per reason, and every process's counters in ``wsbridge status`` through the layer."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from wsbridge import drops
from wsbridge.exceptions import ChannelFull
from wsbridge.heartbeat import Heartbeat, read_processes
from wsbridge.layers import build_layer
from wsbridge.layers.memory import MemoryLayer
from wsbridge.process import identity

from .redis_helpers import SHARED_REDIS, make_layer_factory

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_counters():
    drops.reset_drop_counts()
    yield
    drops.reset_drop_counts()


def drop_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wsbridge.drops"
        and r.levelno == logging.WARNING
        and r.getMessage().startswith("wsbridge dropped")
    ]


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def refuse(message):
    raise ChannelFull("the connection's mailbox is full")


@pytest.mark.redis
def test_full_mailbox_behind_redis_warns_once_with_count_and_is_counted(caplog):
    caplog.set_level(logging.INFO)
    with make_layer_factory() as make:
        receiver, sender = make(), make()
        channel = receiver.new_channel()
        receiver.attach(channel, refuse)  # what a connection does when its mailbox is full
        for i in range(5):
            sender.send(channel, {"type": "x", "i": i})
        assert wait_until(lambda: drops.drop_counts().get("mailbox_full") == 5)
    lines = drop_lines(caplog)
    assert len(lines) == 1, lines  # rate-limited: one line for the five
    assert "mailbox was full" in lines[0] and channel in lines[0]


def test_group_member_skipped_on_the_memory_layer_is_counted_and_warned(caplog):
    layer = MemoryLayer(capacity=1)
    layer.group_add("room", "full.member")
    layer.group_send("room", {"type": "x"})
    assert layer.group_send("room", {"type": "x"}) == 1
    assert layer.group_send("room", {"type": "x"}) == 1
    assert drops.drop_counts()["group_member_full"] == 2
    lines = drop_lines(caplog)
    assert len(lines) == 1 and "[1 dropped" in lines[0], lines


def test_the_warning_comes_back_after_the_interval_with_the_running_count(caplog, monkeypatch):
    monkeypatch.setattr(drops, "WARNING_INTERVAL", 0.05)
    drops.record_drop("queue_full", detail="a")
    drops.record_drop("queue_full", detail="b")  # inside the interval: counted only
    time.sleep(0.1)
    drops.record_drop("queue_full", detail="c")
    lines = drop_lines(caplog)
    assert len(lines) == 2
    assert "[3 dropped for this reason" in lines[1]
    assert drops.drop_counts() == {"queue_full": 3}


@pytest.mark.redis
def test_undecodable_item_is_counted_and_warned(caplog):
    import redis

    with make_layer_factory() as make:
        layer = make()
        channel = layer.new_channel()
        got = []
        layer.attach(channel, got.append)
        inbox = layer.layout.inbox_keys()[0]
        redis.Redis.from_url(SHARED_REDIS).rpush(inbox, b"not a wsbridge item")
        assert wait_until(lambda: drops.drop_counts().get("undecodable") == 1)
    assert got == []
    assert any("undecodable item" in line for line in drop_lines(caplog))


@pytest.mark.redis
def test_layer_unavailable_sends_are_counted():
    from wsbridge.exceptions import LayerUnavailable

    from .redis_server import free_port

    layer = build_layer(
        {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": [f"redis://127.0.0.1:{free_port()}/0"],
                "retry_backoff": (0.01, 0.05),
            },
        }
    )
    try:
        with pytest.raises(LayerUnavailable):
            layer.group_send("room", {"type": "x"})
        with pytest.raises(LayerUnavailable):
            layer.send("jobs", {"type": "x"})
    finally:
        layer.close()
    assert drops.drop_counts()["layer_unavailable"] == 2


@pytest.mark.redis
def test_status_shows_the_counters_of_every_process_and_forgets_dead_ones():
    with make_layer_factory() as make:
        layer = make()
        drops.record_drop("mailbox_full", 7, detail="test")
        assert Heartbeat(layer, role="server", ttl=30).beat()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsbridge",
                "status",
                "--json",
                "--layer",
                f"{SHARED_REDIS}?prefix={make.prefix}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
        processes = json.loads(result.stdout)["processes"]
        mine = [p for p in processes if p["id"] == identity()]
        assert mine and mine[0]["drops"] == {"mailbox_full": 7}, processes
        text = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsbridge",
                "status",
                "--layer",
                f"{SHARED_REDIS}?prefix={make.prefix}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        ).stdout
        assert "processes: 1 alive" in text and "mailbox_full=7" in text, text
        # A process that stops beating (killed, crashed) vanishes after its TTL.
        assert Heartbeat(layer, role="server", interval=0.1, ttl=0.3).beat()
        assert read_processes(layer)
        assert wait_until(lambda: read_processes(layer) == [], timeout=5)


def test_memory_layer_send_from_a_process_serving_nothing_warns_once():
    code = (
        "from wsbridge import Group, Channel\n"
        "print(Group('room').send({'text': 'hi'}))\n"
        "Group('room').send({'text': 'again'})\n"
        "Channel('jobs').send({'x': 1})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("in-memory channel layer") == 1, done.stderr
    assert "serves no connections" in done.stderr


def test_channels_backend_name_without_compat_warns_it_will_not_interoperate(caplog):
    spec = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [SHARED_REDIS]}}
    build_layer(spec).close()
    assert any("does not share groups" in r.getMessage() for r in caplog.records)
    caplog.clear()
    build_layer({**spec, "CONFIG": {**spec["CONFIG"], "compat": "channels_redis"}}).close()
    assert not any("does not share groups" in r.getMessage() for r in caplog.records)


def test_every_drop_reason_is_in_the_docs_table():
    text = (ROOT / "docs" / "topics" / "layers.rst").read_text()
    table = text.split("running count:", 1)[1].split("Every serving process", 1)[0]
    listed = {line.split("``")[1] for line in table.splitlines() if line.startswith("``")}
    assert listed == set(drops.REASONS)


def test_a_message_sent_after_close_is_counted_and_said_not_dropped_silently(caplog):
    from wsbridge import WebsocketConsumer
    from wsbridge.testing import WebsocketCommunicator

    class ClosesThenSends(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.close(code=4000)
            self.send(text_data="too late")

    caplog.set_level(logging.INFO)
    layer = MemoryLayer()
    try:
        client = WebsocketCommunicator(ClosesThenSends, "/", channel_layer=layer)
        assert client.connect()[0]
        client.send_to(text_data="hi")
        assert client.receive_output()["type"] == "websocket.close"
        assert wait_until(lambda: drops.drop_counts().get("connection_closed") == 1)
        assert any("closing or closed" in line for line in drop_lines(caplog))
        client.disconnect()
    finally:
        layer.close()


def test_status_shows_what_a_serving_process_refused(wsbridge_serve):
    """A real server on Redis turns a malformed request away (400): ``wsbridge status``
    lists it under ``refused`` for that process, and ``--json`` under ``refusals``."""
    import secrets
    import socket
    import urllib.request

    from tests.conftest import server_env

    url = f"{SHARED_REDIS}?prefix=wsbref{secrets.token_hex(4)}"
    served = wsbridge_serve("tests.e2e.status_app:application", env=server_env(WSBRIDGE_LAYER=url))
    urllib.request.urlopen(served.url("/"), timeout=10).read()  # serving: its heartbeat runs
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")

    def status(*extra: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "wsbridge", "status", *extra, "--layer", url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=True,
        ).stdout

    def refusals() -> dict:
        mine = [p for p in json.loads(status("--json"))["processes"] if p["pid"] == served.pid]
        return mine[0].get("refusals", {}) if mine else {}

    assert wait_until(lambda: refusals().get("bad_request", 0) >= 1, timeout=20), refusals()
    assert "refused: bad_request=1" in status()
