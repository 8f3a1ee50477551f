"""channels_redis mode keeps channels_redis's semantics, checked against the real one.

Each test does the same thing with wsbridge (compat="channels_redis") and
with channels_redis 4 (in a subprocess, asyncio) under the same CONFIG, and
compares: capacity (default 100, ``channel_capacity`` patterns) with
``ChannelFull`` on send, message expiry and group expiry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsbridge.exceptions import ChannelFull

from .redis_helpers import SHARED_REDIS, make_layer_factory

pytestmark = pytest.mark.redis

PEER = str(Path(__file__).with_name("channels_peer.py"))


def peer(prefix: str, *args: str, config: dict | None = None) -> str:
    """Run one channels_redis operation; its last line of output."""
    env = {**os.environ, "PEER_CONFIG": json.dumps(config or {})}
    done = subprocess.run(
        [sys.executable, PEER, args[0], SHARED_REDIS, prefix, *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def fill(layer, channel: str, n: int) -> dict:
    sent = full = 0
    for i in range(n):
        try:
            layer.send(channel, {"type": "fill", "i": i})
            sent += 1
        except ChannelFull:
            full += 1
    return {"sent": sent, "full": full}


def test_a_paused_process_holds_100_like_channels_redis_then_channel_full():
    with make_layer_factory(compat="channels_redis") as make:
        sender, paused = make(), make()
        # Two specific channels of a process that reads nothing (paused).
        ours, theirs = paused.new_channel(), paused.new_channel("other")
        assert fill(sender, ours, 300) == {"sent": 100, "full": 200}
        assert json.loads(peer(make.prefix, "fill", theirs, "300")) == {"sent": 100, "full": 200}


def test_channel_capacity_patterns_apply_as_in_channels_redis():
    config = {"capacity": 10, "channel_capacity": {"jobs.*": 3}}
    with make_layer_factory(compat="channels_redis", **config) as make:
        layer = make()
        results = {}
        for name in ("jobs.small", "other", "specific.abc!def"):
            ours = fill(layer, name, 20)
            layer.flush()
            theirs = json.loads(peer(make.prefix, "fill", name, "20", config=config))
            results[name] = (ours, theirs)
            assert ours == theirs, results
        assert results["jobs.small"][0] == {"sent": 3, "full": 17}
        assert results["other"][0] == {"sent": 10, "full": 10}


def test_messages_older_than_expiry_are_not_received_on_either_side():
    config = {"expiry": 1}
    with make_layer_factory(compat="channels_redis", **config) as make:
        layer = make()
        layer.send("exp.ours", {"type": "old"})
        assert peer(make.prefix, "send", "exp.theirs", "old", config=config) == "SENT"
        time.sleep(1.6)
        assert peer(make.prefix, "poll", "exp.ours", "0.5", config=config) == "NONE"
        assert layer.receive("exp.theirs", timeout=0.5) is None


def test_group_memberships_expire_after_group_expiry_on_either_side():
    config = {"group_expiry": 1}
    with make_layer_factory(compat="channels_redis", **config) as make:
        layer = make()
        layer.group_add("gexp.room", "gexp.ours")
        assert peer(make.prefix, "group_add", "gexp.room", "gexp.theirs", config=config) == "ADDED"
        time.sleep(2.2)  # channels_redis compares whole seconds
        layer.group_send("gexp.room", {"type": "chat.message", "text": "late"})
        assert peer(make.prefix, "group_send", "gexp.room", "late", config=config) == "SENT"
        assert layer.receive("gexp.ours", timeout=0.3) is None
        assert peer(make.prefix, "poll", "gexp.theirs", "0.3", config=config) == "NONE"
        assert layer.group_channels("gexp.room") == []
