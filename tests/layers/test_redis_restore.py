"""Restoring memberships (restore.py): never a greenlet traceback, even when closed under it."""

from __future__ import annotations

import logging

import gevent
import pytest

from wsbridge.layers.redis import RedisLayer

from .conformance import wait_for
from .redis_helpers import SHARED_REDIS, delete_prefix, unique_prefix

pytestmark = pytest.mark.redis

#: Enough memberships that a restore is still running when the test acts.
MEMBERSHIPS = 3000


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


def test_a_restore_whose_connections_are_dropped_logs_and_counts_never_a_traceback(capfd, caplog):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    layer = _layer_with_memberships()
    shard = layer.shards[0]
    try:
        layer._on_recovered(shard)
        gevent.sleep(0.05)
        shard.pool.disconnect()  # every connection, the one in use too
        wait_for(lambda: not layer.memberships._greenlets, timeout=10)
        err = capfd.readouterr().err
        assert "Traceback" not in err and "failed with" not in err, err
        # Said once and counted: as a failed restore, or as the shard's outage.
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert layer.counters.get("restore_failed", 0) + shard.outages >= 1, said
        assert said
    finally:
        layer.close()
        delete_prefix(SHARED_REDIS, layer.prefix)


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
