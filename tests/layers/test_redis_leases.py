"""Process leases: a process killed with -9 has its inbox and memberships removed soon.

The crashed process is a real child Python process holding a Redis layer
(channels attached, groups joined), killed with SIGKILL. A surviving layer
reaps it within the bounded time (``lease * 1.5`` plus a reap pass), far
sooner than ``group_expiry``. Run on one Redis and on the Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wsbridge.layers.redis import RedisLayer

from .conformance import Collector, wait_for
from .conftest import LEASE
from .redis_helpers import SHARED_REDIS, delete_prefix, unique_prefix

pytestmark = pytest.mark.redis


ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from wsbridge.layers.redis import RedisLayer
    config = json.loads(sys.argv[1])
    layer = RedisLayer(**config)
    channels = [layer.new_channel() for _ in range(3)]
    for channel in channels:
        layer.attach(channel, lambda message: None)
        for group in ("lease.a", "lease.b"):
            layer.group_add(group, channel)
    deadline = time.monotonic() + 5
    client, key = layer.shards[0].client, layer.layout.leases_key
    while client.zscore(key, layer.client_prefix) is None and time.monotonic() < deadline:
        import gevent; gevent.sleep(0.05)
    print(json.dumps({"process": layer.client_prefix, "channels": channels}), flush=True)
    import gevent
    gevent.sleep(120)
    """
)


@pytest.fixture
def config(leased_config):
    """One Redis and the Redis Cluster, each with the short :data:`LEASE` (conftest.py)."""
    return leased_config


def _start_child(config: dict) -> tuple[subprocess.Popen[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "the child process did not start"
    return child, json.loads(line)


def test_a_killed_process_is_reaped_within_the_lease_bound(config, caplog):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    survivor = RedisLayer(**config)
    child, info = _start_child(config)
    try:
        mine = survivor.new_channel()
        got = Collector()
        survivor.attach(mine, got)
        survivor.group_add("lease.a", mine)
        assert set(info["channels"]) <= set(survivor.group_channels("lease.a"))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        killed_at = time.monotonic()
        # On a cluster each group is its own slot, so its own call: wait for both.
        wait_for(
            lambda: (
                survivor.group_channels("lease.a") == [mine]
                and survivor.group_channels("lease.b") == []
            ),
            timeout=LEASE * 3 + 5,
        )
        reaped_after = time.monotonic() - killed_at
        inbox = survivor.layout.proc_key(info["process"])
        shard = survivor.shards[0]
        # The inbox and the groups list go last, after the memberships (on a cluster in
        # another slot, so another call): wait for them too.
        pgroups = survivor.layout.pgroups_key(info["process"])
        wait_for(lambda: not shard.client.exists(inbox, pgroups), timeout=5)
        # group_send no longer pushes to the dead inbox, and still reaches the living.
        survivor.group_send("lease.a", {"type": "after"})
        assert got.wait(1) == [{"type": "after"}]
        assert not shard.client.exists(inbox)
        assert survivor.counters["reaped_processes"] == 1
        assert any("stopped renewing its lease" in r.getMessage() for r in caplog.records)
        print(f"\nreaped {reaped_after:.2f}s after the kill (lease {LEASE}s)")
        assert reaped_after < LEASE * 3 + 5
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        survivor.close()


def test_a_live_process_whose_lease_ended_restores_its_memberships(config, caplog):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    stalled, reaper = RedisLayer(**config), RedisLayer(**config)
    try:
        channel = stalled.new_channel()
        got = Collector()
        stalled.attach(channel, got)
        stalled.group_add("lease.live", channel)
        shard = stalled.shards[0]
        key = stalled.layout.leases_key
        wait_for(lambda: shard.client.zscore(key, stalled.client_prefix))
        # As if the process had stalled past its lease: it renews nothing for
        # a while, and the reaper takes it.
        stalled.leases.last_renewal = time.monotonic() + 3600
        shard.client.zadd(key, {stalled.client_prefix: 1})
        reaper.new_channel()
        reaper._ensure_readers()
        wait_for(lambda: reaper.counters.get("reaped_processes") == 1, timeout=LEASE * 3 + 5)
        assert reaper.group_channels("lease.live") == []
        stalled.leases.last_renewal = 0.0  # the stall ends
        # The stalled process notices at its next renewal and restores its memberships.
        wait_for(lambda: reaper.group_channels("lease.live") == [channel], timeout=LEASE * 3)
        assert stalled.counters["lease_lost"] == 1
        reaper.group_send("lease.live", {"type": "back"})
        assert got.wait(1) == [{"type": "back"}]
    finally:
        stalled.close()
        reaper.close()


def test_a_process_closed_gracefully_cleans_up_after_itself(config, caplog):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    layer, other = RedisLayer(**config), RedisLayer(**config)
    try:
        channel = layer.new_channel()
        layer.attach(channel, Collector())
        layer.group_add("lease.closing", channel)
        layer.group_add("lease.closing", layer.new_channel())  # never detached
        shard = layer.shards[0]
        key = layer.layout.leases_key
        wait_for(lambda: shard.client.zscore(key, layer.client_prefix))
        process = layer.client_prefix
        layer.close()
        client = other.shards[0].client
        assert client.zscore(key, process) is None
        assert other.group_channels("lease.closing") == []
        assert not client.exists(other.layout.pgroups_key(process))
        assert not [r for r in caplog.records if "stopped renewing" in r.getMessage()]
    finally:
        other.close()


def test_a_lease_table_renews_lists_ended_leases_and_lets_one_claimer_win():
    from wsbridge.layers.redis.lease import LeaseTable

    layer = RedisLayer(hosts=[SHARED_REDIS], prefix=unique_prefix())
    try:
        shard = layer.shards[0]
        table = LeaseTable(lambda: shard, layer.prefix + ":1:testleases", duration=30)
        assert table.renew("p1") is None  # no lease before
        previous = table.renew("p1")
        assert previous is not None and previous > time.time() * 1000
        assert table.ended(10) == []
        table.end("p1")
        table.end("p2")  # holds no lease: stays without one
        assert table.ended(10) == ["p1"]
        assert table.claim("p1") is True and table.claim("p1") is False
        assert table.ended(10) == []
    finally:
        layer.close()
        delete_prefix(SHARED_REDIS, layer.prefix)
