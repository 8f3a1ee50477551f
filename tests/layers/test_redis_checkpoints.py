"""Session checkpoints in the Redis layer: fenced by owner, taken only from a dead process.

The dead process is a real child Python process holding a Redis layer (its
owner channel attached, so its lease is renewed) that saved a checkpoint,
killed with SIGKILL. Run on one Redis and on the Redis Cluster (each
session's hash in its own slot).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from wsbridge.layers.redis import RedisLayer

from .conformance import wait_for
from .conftest import LEASE
from .test_redis_leases import ROOT

pytestmark = pytest.mark.redis

OWNER = "wsbridge.lp.owner"
MESSAGE = {"type": "lp.handoff", "sid": b"\x01" * 16, "scope": {"path": "/ws/x/"}}

CHILD = textwrap.dedent(
    """
    import json, sys
    import gevent
    from wsbridge.layers.redis import RedisLayer
    config = json.loads(sys.argv[1])
    layer = RedisLayer(**config)
    owner = layer.new_channel("wsbridge.lp.owner")
    layer.attach(owner, lambda message: None)
    while not layer.checkpoints.alive(owner):
        gevent.sleep(0.05)
    assert layer.checkpoints.save_many(owner, [("feed", {"n": 1})], 60) == [True]
    print(json.dumps({"owner": owner}), flush=True)
    gevent.sleep(120)
    """
)


@pytest.fixture
def config(leased_config):
    """One Redis and the Redis Cluster, each with a short lease (conftest.py)."""
    return leased_config


def _layer(config: dict) -> RedisLayer:
    layer = RedisLayer(**config)
    assert "checkpoints" in layer.extensions
    return layer


def test_a_checkpoint_is_fenced_by_its_owner_and_dropped_only_by_it(config):
    layer = _layer(config)
    try:
        store = layer.checkpoints
        mine, other = layer.new_channel(OWNER), layer.new_channel(OWNER)
        assert store.owner("ab12") is None
        assert store.save_many(mine, [("ab12", MESSAGE), ("cd34", MESSAGE)], 60) == [True, True]
        assert store.save_many(other, [("ab12", MESSAGE)], 60) == [False]  # not its session
        assert store.owner("ab12") == mine
        store.drop_many(other, ["ab12"])  # not its to drop
        assert store.owner("ab12") == mine
        assert store.take("ab12", other, other, 60) is None  # taken only from the holder seen
        store.drop_many(mine, ["ab12", "cd34"])
        assert store.owner("ab12") is None and store.owner("cd34") is None
    finally:
        layer.close()


def test_a_checkpoint_over_the_size_limit_is_not_saved_and_is_counted(config):
    layer = _layer({**config, "max_message_size": 1000})
    try:
        owner = layer.new_channel(OWNER)
        big = {**MESSAGE, "pad": "x" * 2000}
        assert layer.checkpoints.save_many(owner, [("big1", big), ("ok1", MESSAGE)], 60) == [
            None,
            True,
        ]
        assert layer.stats()["counters"]["checkpoint_failed"] == 1
    finally:
        layer.close()


def test_only_a_dead_processes_checkpoint_can_be_taken_and_by_one_taker(config):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    layer = _layer(config)
    try:
        line = child.stdout.readline()
        assert line, "the child process did not start"
        dead = json.loads(line)["owner"]
        store = layer.checkpoints
        assert store.alive(dead) and store.owner("feed") == dead
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        wait_for(lambda: not store.alive(dead), timeout=LEASE * 3)
        print(f"\nkill -9 -> its lease seen ended after {time.monotonic() - killed:.2f} s")
        first, second = layer.new_channel(OWNER), layer.new_channel(OWNER)
        assert store.take("feed", dead, first, 60) == {"n": 1}
        assert store.take("feed", dead, second, 60) is None  # one taker wins
        assert store.owner("feed") == first
        assert store.save_many(dead, [("feed", {"n": 2})], 60) == [False]  # fenced out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        layer.close()


def test_checkpoints_are_sealed_with_the_layers_encryption_keys(config):
    layer = _layer({**config, "symmetric_encryption_keys": ["a" * 32]})
    try:
        owner = layer.new_channel(OWNER)
        secret = {"type": "lp.handoff", "scope": {"cookie": "sessionid=topsecret"}}
        assert layer.checkpoints.save_many(owner, [("enc1", secret)], 60) == [True]
        shard = layer.checkpoints._shard("enc1")
        raw = shard.client.hget(layer.checkpoints._key("enc1"), "data")
        assert b"topsecret" not in raw
        assert layer.checkpoints.take("enc1", owner, owner, 60) == secret
    finally:
        layer.close()


def test_without_leases_there_are_no_checkpoints(config):
    layer = RedisLayer(**{**config, "lease": 0})
    try:
        assert "checkpoints" not in layer.extensions and layer.checkpoints is None
    finally:
        layer.close()


def test_an_idle_live_process_keeps_its_lease_whatever_its_block_timeout(config):
    # The reader renews between blocking reads: a read longer than the lease let a live,
    # idle process look dead (its sessions adoptable, its state reaped). It is capped.
    settings = {**config, "block_timeout": 5.0}
    layer, watcher = _layer(settings), _layer(config)
    try:
        assert layer.block_timeout == pytest.approx(LEASE / 3)
        owner = layer.new_channel(OWNER)
        layer.attach(owner, lambda message: None)
        wait_for(lambda: watcher.checkpoints.alive(owner), timeout=5)
        end = time.monotonic() + 3 * LEASE
        while time.monotonic() < end:
            assert watcher.checkpoints.alive(owner)
            time.sleep(0.1)
    finally:
        layer.close()
        watcher.close()


def test_a_process_holds_its_lease_before_its_first_checkpoint(config):
    # A process whose reader had not yet renewed its lease saved a checkpoint, and
    # looked dead meanwhile: another process adopted the session of a live one.
    layer = _layer(config)
    try:
        owner = layer.new_channel(OWNER)  # nothing attached: no reader, no lease yet
        assert not layer.checkpoints.alive(owner)
        assert layer.checkpoints.save_many(owner, [("ef56", MESSAGE)], 60) == [True]
        assert layer.checkpoints.alive(owner)
        layer.checkpoints.drop_many(owner, ["ef56"])
    finally:
        layer.close()
