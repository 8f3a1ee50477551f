"""Restoring memberships (restore.py): never a greenlet traceback, even when closed under it."""

from __future__ import annotations

import logging

import gevent
import pytest

from wsbridge.layers.redis import RedisLayer

from .conformance import wait_for
from .redis_helpers import SHARED_REDIS, delete_prefix, unique_prefix

pytestmark = pytest.mark.redis

#: Enough memberships that a restore is still running when the test acts (it writes
#: 500 per round trip, one group each here).
MEMBERSHIPS = 40000


def _layer_with_memberships() -> RedisLayer:
    layer = RedisLayer(hosts=[SHARED_REDIS], prefix=unique_prefix())
    channel = layer.new_channel()
    for i in range(MEMBERSHIPS):
        layer.members.add(f"restore.g{i}", channel)  # remembered, as after an outage
    return layer


def test_closing_the_layer_while_a_restore_runs_stops_it_without_a_traceback(capfd):
    layer = _layer_with_memberships()
    try:
        layer._on_recovered(layer.shards[0])  # what a recovery (or a lost lease) does
        gevent.sleep(0.05)  # the restore greenlet is now waiting on Redis, mid-way
        layer.close()
        gevent.sleep(0.5)
        err = capfd.readouterr().err
        assert "Traceback" not in err and "failed with" not in err, err
    finally:
        layer.close()
        delete_prefix(SHARED_REDIS, layer.prefix)


def test_a_restore_whose_redis_goes_away_mid_way_logs_and_counts_never_a_traceback(
    capfd, caplog, redis_server
):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    layer = RedisLayer(hosts=[redis_server.url], prefix="dropped", retry_backoff=(0.02, 0.3))
    channel = layer.new_channel()
    for i in range(MEMBERSHIPS):
        layer.members.add(f"restore.g{i}", channel)  # remembered, as after an outage
    shard = layer.shards[0]
    batches = []
    write = layer.layout.group_add_many

    def write_then_lose_redis(shard_, members):
        batches.append(len(members))
        if len(batches) == 2:
            redis_server.kill()  # the Redis goes away between two batches of the restore
        write(shard_, members)

    layer.layout.group_add_many = write_then_lose_redis  # type: ignore[method-assign]
    try:
        layer._on_recovered(shard)
        wait_for(lambda: len(batches) >= 2 and not layer.memberships._greenlets, timeout=30)
        err = capfd.readouterr().err
        assert "Traceback" not in err and "failed with" not in err, err
        # Said once and counted: as a failed restore, or as the shard's outage.
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert layer.counters.get("restore_failed", 0) + shard.outages >= 1, said
        assert said
        assert len(batches) == 2  # it stopped at the first failed batch
    finally:
        layer.close()


def test_a_closed_layer_restores_nothing():
    layer = RedisLayer(hosts=[SHARED_REDIS], prefix=unique_prefix())
    try:
        channel = layer.new_channel()
        layer.group_add("restore.closed", channel)
        layer.close()
        assert layer.memberships.restore(layer.shards[0]) == 0
        layer._on_recovered(layer.shards[0])
        assert not layer.memberships._greenlets
    finally:
        delete_prefix(SHARED_REDIS, layer.prefix)


def test_a_restore_writes_its_memberships_in_batches_not_one_round_trip_each(redis_server):
    layer = RedisLayer(hosts=[redis_server.url], prefix="batched")
    try:
        channels = [layer.new_channel() for _ in range(4)]
        for i in range(1200):
            layer.members.add(f"restore.g{i % 300}", channels[i // 300])  # as after an outage
        shard = layer.shards[0]
        calls = []
        real_call = shard.call

        def counting_call(func, *args, **kwargs):
            calls.append(func)
            return real_call(func, *args, **kwargs)

        shard.call = counting_call  # type: ignore[method-assign]
        assert layer.memberships.restore(shard) == 1200
        shard.call = real_call  # type: ignore[method-assign]
        assert len(calls) <= 3  # 1,200 in batches of 500; one at a time this was 1,200
        for i in range(300):
            members = set(layer.group_channels(f"restore.g{i}"))
            assert members == set(channels[:4])
    finally:
        layer.close()
