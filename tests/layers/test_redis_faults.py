"""Outages: a real redis-server (started here, on a free port) is stopped and restarted."""

from __future__ import annotations

import gc
import logging
import os

import gevent
import pytest

from wsbridge.exceptions import LayerUnavailable
from wsbridge.layers.redis import RedisLayer

from .conformance import Collector, wait_for

pytestmark = pytest.mark.redis


def make(server, **options) -> RedisLayer:
    # After a restart group sends refuse for restore_window (test_redis_restart_window.py).
    config = {
        "hosts": [server.url],
        "prefix": "faults",
        "retry_backoff": (0.02, 0.3),
        "restore_window": 0.5,
    }
    config.update(options)
    return RedisLayer(**config)


def outage_lines(caplog):
    return [r.getMessage() for r in caplog.records if "unreachable (" in r.getMessage()]


def recovery_lines(caplog):
    return [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]


def test_send_during_outage_raises_layer_unavailable_then_works_again(redis_server, caplog):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    layer = make(redis_server)
    try:
        layer.send("jobs", {"type": "before"})
        redis_server.stop()
        for _ in range(5):
            with pytest.raises(LayerUnavailable, match="unreachable"):
                layer.send("jobs", {"type": "during"})
            with pytest.raises(LayerUnavailable):
                layer.group_send("room", {"type": "during"})
        redis_server.start()
        wait_for(lambda: _sends(layer))
        assert layer.receive("jobs", timeout=2) == {"type": "after"}
        assert len(outage_lines(caplog)) == 1
        assert len(recovery_lines(caplog)) == 1
    finally:
        layer.close()


def _sends(layer: RedisLayer) -> bool:
    try:
        layer.send("jobs", {"type": "after"})
    except LayerUnavailable:
        return False
    return True


def test_reader_and_memberships_come_back_after_a_restart(redis_server, caplog):
    caplog.set_level(logging.INFO, "wsbridge.layers.redis")
    server_process = make(redis_server)
    sender = make(redis_server)
    try:
        channel = server_process.new_channel()
        got = Collector()
        server_process.attach(channel, got)
        server_process.group_add("room", channel)
        sender.group_send("room", {"type": "n", "i": 0})
        got.wait(1)

        redis_server.restart()  # comes back empty: memberships are gone from Redis
        wait_for(lambda: server_process.shards[0].up and "room" in _groups(sender))
        assert sender.group_channels("room") == [channel]
        wait_for(lambda: _group_sends(sender, {"type": "n", "i": 1}))
        assert [m["i"] for m in got.wait(2)] == [0, 1]
        # Logged once: an outage and its recovery, or a restart seen on reconnection.
        outages, recoveries = outage_lines(caplog), recovery_lines(caplog)
        restarts = [r for r in caplog.records if "restarted; restoring" in r.getMessage()]
        assert (len(outages), len(recoveries), len(restarts)) in ((1, 1, 0), (0, 0, 1), (1, 1, 1))
        assert any("restored 1 group membership" in r.getMessage() for r in caplog.records)
    finally:
        server_process.close()
        sender.close()


def _group_sends(layer: RedisLayer, message: dict, group: str = "room") -> bool:
    # After a restart, group sends refuse (LayerUnavailable) for the restore window.
    try:
        layer.group_send(group, message)
    except LayerUnavailable:
        return False
    return True


def _groups(layer: RedisLayer) -> list[str]:
    try:
        return ["room"] if layer.group_channels("room") else []
    except LayerUnavailable:
        return []


def test_group_add_during_an_outage_is_applied_when_redis_is_back(redis_server):
    layer = make(redis_server)
    other = make(redis_server)
    try:
        channel = layer.new_channel()
        got = Collector()
        layer.attach(channel, got)
        redis_server.stop()
        wait_for(lambda: not layer.shards[0].up)
        layer.group_add("late", channel)  # remembered, does not raise
        redis_server.start()
        wait_for(lambda: _member(other, "late", channel))
        wait_for(lambda: _group_sends(other, {"type": "hello"}, "late"))
        assert got.wait(1)[0] == {"type": "hello"}
    finally:
        layer.close()
        other.close()


def _member(layer: RedisLayer, group: str, channel: str) -> bool:
    try:
        return channel in layer.group_channels(group)
    except LayerUnavailable:
        return False


def test_connections_keep_serving_locally_during_an_outage(redis_server):
    layer = make(redis_server)
    try:
        channel = layer.new_channel()
        layer.attach(channel, Collector())
        redis_server.stop()
        # Local work goes on: greenlets run, names are made, detach does not raise.
        ticks = gevent.spawn(lambda: [gevent.sleep(0.01) for _ in range(5)])
        assert ticks.join(timeout=2) is None and ticks.successful()
        layer.detach(layer.new_channel())
        layer.detach(channel)
    finally:
        layer.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _greenlets() -> int:
    import greenlet

    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def test_no_greenlet_socket_or_state_leak_after_repeated_outages(redis_server):
    layer = make(redis_server)
    sender = make(redis_server)
    try:
        channel = layer.new_channel()
        got = Collector()
        layer.attach(channel, got)
        layer.group_add("room", channel)

        def cycle(i: int) -> None:
            redis_server.restart()
            wait_for(lambda: _member(sender, "room", channel))
            wait_for(lambda: _group_sends(sender, {"type": "n", "i": i}))
            got.wait(i + 1)

        cycle(0)
        gc.collect()
        fds, greenlets = _open_fds(), _greenlets()
        for i in range(1, 5):
            cycle(i)
        gc.collect()
        assert _open_fds() <= fds + 2
        assert _greenlets() <= greenlets + 2
        assert (
            len(layer.members) == 1
            and not layer.memberships.pending_discards
            and not layer.local.buffers
        )
        # Each restart was seen as an outage, or (when it fell between two
        # commands) as a new server run_id on reconnection; either way the
        # membership came back, as the deliveries above show.
        assert layer.shards[0].outages <= 5
    finally:
        layer.close()
        sender.close()
