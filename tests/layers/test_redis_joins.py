"""Concurrent ``group_add`` calls share round trips (layers/redis/joins.py), on a real Redis.

Each test has a redis-server of its own, so the command counts it reads from
``INFO commandstats`` are this test's alone.
"""

from __future__ import annotations

import gevent
import gevent.event
import pytest
import redis
from gevent.pool import Pool

from wsbridge.exceptions import LayerUnavailable
from wsbridge.layers.redis import RedisLayer

from .conformance import wait_for

pytestmark = pytest.mark.redis

JOINERS = 300


def zadd_calls(server) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.info("commandstats").get("cmdstat_zadd", {}).get("calls", 0))
    finally:
        client.close()


@pytest.fixture
def layer(redis_server):
    made = RedisLayer(hosts=[redis_server.url], prefix="joins", retry_backoff=(0.02, 0.3))
    yield made
    made.close()


def test_joins_made_at_once_are_written_in_a_few_pipelines_and_all_land(layer, redis_server):
    local = [layer.new_channel() for _ in range(JOINERS)]
    named = [f"named.{i}" for i in range(20)]
    before = zadd_calls(redis_server)
    Pool(JOINERS).map(lambda channel: layer.group_add("room", channel), local + named)
    calls = zadd_calls(redis_server) - before
    # One at a time this was 2 ZADDs per join (640); batched, each batch writes 3 per group.
    assert calls <= 60, calls
    assert sorted(layer.group_channels("room")) == sorted(local + named)
    assert layer.group_send("room", {"type": "room.hello"}) is not None
    for channel in local:
        assert layer.receive(channel, timeout=5)["type"] == "room.hello"
    for channel in named:
        assert layer.receive(channel, timeout=5)["type"] == "room.hello"


def test_a_lone_join_is_written_by_its_caller_at_once(layer, redis_server):
    before = zadd_calls(redis_server)
    channel = layer.new_channel()
    layer.group_add("alone", channel)
    assert zadd_calls(redis_server) - before == 2  # the group and its process entry
    assert layer.group_channels("alone") == [channel]
    assert not layer.layout.joins._queues  # nothing left queued


def test_every_join_of_a_batch_that_cannot_be_written_raises(layer, redis_server):
    # Named channels are not this process's: a join it cannot write raises.
    layer.group_add("warmup", "named.warmup")
    redis_server.kill()
    results = Pool(50).map(_join_or_error(layer), [f"named.{i}" for i in range(50)])
    assert results == ["LayerUnavailable"] * 50
    assert not layer.layout.joins._queues


def test_a_join_queued_behind_killed_writes_is_told_not_left_waiting(layer, monkeypatch):
    writers: list[gevent.Greenlet] = []

    def stuck_write(shard, joins):
        writers.append(gevent.getcurrent())
        gevent.sleep(30)

    monkeypatch.setattr(layer.layout.joins, "_write", stuck_write)
    first = gevent.spawn(layer.group_add, "stuck", "named.first")
    wait_for(lambda: len(writers) == 1, timeout=5)
    second = gevent.spawn(_join_or_error(layer), "named.second")
    gevent.sleep(0.05)  # queued behind the write in flight
    first.kill()  # that caller goes mid-write: the queued join gets a drainer
    wait_for(lambda: len(writers) == 2, timeout=5)
    writers[1].kill()  # and the drainer is killed mid-write (the process stops)
    assert second.get(timeout=5) == "LayerUnavailable"
    assert not layer.layout.joins._queues


def _join_or_error(layer):
    def join(channel: str) -> str:
        try:
            layer.group_add("room", channel)
        except LayerUnavailable:
            return "LayerUnavailable"
        return "joined"

    return join


def _finished(greenlet: gevent.Greenlet, timeout: float) -> bool:
    """True if ``greenlet`` ended without an error within ``timeout`` seconds."""
    greenlet.join(timeout)
    if greenlet.ready() and not greenlet.successful():
        raise greenlet.exception
    return greenlet.ready()


class _HeldWrites:
    """Joins' writes wait while ``held`` (a slow Redis), then go through."""

    def __init__(self, layer, monkeypatch) -> None:
        self.real = layer.layout.joins._write
        self.release = gevent.event.Event()
        self.release.set()
        self.waiting = 0
        monkeypatch.setattr(layer.layout.joins, "_write", self.write)

    def write(self, shard, joins) -> None:
        self.waiting += 1
        self.release.wait(10)
        self.waiting -= 1
        self.real(shard, joins)

    def hold(self) -> None:
        self.release.clear()


def test_a_local_join_of_a_group_the_process_receives_does_not_wait_for_redis(
    layer, redis_server, monkeypatch
):
    writes = _HeldWrites(layer, monkeypatch)
    other = RedisLayer(hosts=[redis_server.url], prefix="joins")  # another process
    try:
        first, second = layer.new_channel(), layer.new_channel()
        layer.group_add("lobby", first)  # the first local member: written, waited for
        writes.hold()
        joined = gevent.spawn(layer.group_add, "lobby", second)
        assert _finished(joined, 1), "the second join waited for Redis"
        wait_for(lambda: writes.waiting == 1, timeout=5)  # its entry is on its way
        other.group_send("lobby", {"type": "lobby.hi"})
        assert layer.receive(second, timeout=5)["type"] == "lobby.hi"
        assert layer.receive(first, timeout=5)["type"] == "lobby.hi"
        writes.release.set()
        assert sorted(layer.group_channels("lobby")) == sorted([first, second])
        assert sorted(other.group_channels("lobby")) == sorted([first, second])
    finally:
        other.close()


def test_the_first_local_join_of_a_group_waits_until_it_is_written(layer, monkeypatch):
    writes = _HeldWrites(layer, monkeypatch)
    writes.hold()
    joined = gevent.spawn(layer.group_add, "fresh", layer.new_channel())
    assert not _finished(joined, 0.3), "returned before this process receives the group"
    writes.release.set()
    assert _finished(joined, 5)


def test_a_discard_right_after_an_unwritten_join_is_not_overtaken_by_it(layer, monkeypatch):
    writes = _HeldWrites(layer, monkeypatch)
    first, second = layer.new_channel(), layer.new_channel()
    layer.group_add("hall", first)
    writes.hold()
    layer.group_add("hall", second)  # queued behind the held write
    leaving = gevent.spawn(layer.group_discard, "hall", second)
    gevent.sleep(0.2)
    writes.release.set()
    assert _finished(leaving, 5)
    assert layer.group_channels("hall") == [first]  # not a stale entry for `second`


def test_a_forked_process_waits_for_its_first_join_of_its_parents_groups(layer):
    layer.group_add("parents", layer.new_channel())
    assert "parents" in layer.memberships.routed
    layer.memberships.after_fork()
    assert not layer.memberships.routed


def test_a_queued_join_that_cannot_be_written_is_warned_once_per_interval_with_a_count(
    caplog, monkeypatch
):
    import logging

    from wsbridge.layers.redis import joins

    monkeypatch.setattr(joins, "_unwritten", {"count": 0, "warned": -joins.WARNING_INTERVAL})

    def failing(shard, batch):
        raise RuntimeError("NOSCRIPT (a Redis error)")

    batcher = joins.JoinBatcher(failing)
    caplog.set_level(logging.DEBUG, logger="wsbridge.layers.redis")
    for i in range(2):
        batcher.add_behind("shard", "g", f"c{i}")
        wait_for(lambda: not batcher._queues, timeout=5)
    lines = [r for r in caplog.records if "not written yet" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG]
    assert "[2 so far]" in lines[1].getMessage()


def test_a_closing_layer_writes_its_queued_joins_before_it_cleans_up(redis_server, monkeypatch):
    layer = RedisLayer(hosts=[redis_server.url], prefix="joins", lease=1.5)
    order: list[str] = []
    writes = _HeldWrites(layer, monkeypatch)
    real_write = writes.write
    monkeypatch.setattr(
        layer.layout.joins, "_write", lambda s, j: (real_write(s, j), order.append("written"))
    )
    first = layer.new_channel()
    layer.attach(first, lambda message: None)  # a reader: the process renews its lease
    wait_for(lambda: layer.leases.held, timeout=5)
    real_release = layer.leases.release
    monkeypatch.setattr(
        layer.leases, "release", lambda: (order.append("cleaned up"), real_release())[1]
    )
    layer.group_add("closing", first)
    writes.hold()
    layer.group_add("closing", layer.new_channel())  # queued behind the held write
    closing = gevent.spawn(layer.close)
    gevent.sleep(0.2)
    writes.release.set()
    assert _finished(closing, 10)
    assert order == ["written", "written", "cleaned up"]


def test_a_flush_that_outwaits_a_hung_write_goes_on_and_says_so(caplog, monkeypatch):
    import logging

    from wsbridge.layers.redis import joins

    monkeypatch.setattr(joins, "_unwritten", {"count": 0, "warned": -joins.WARNING_INTERVAL})
    release = gevent.event.Event()
    batcher = joins.JoinBatcher(lambda shard, batch: release.wait(5))
    caplog.set_level(logging.WARNING, logger="wsbridge.layers.redis")
    batcher.add_behind("shard", "g", "c")
    batcher.flush("shard", timeout=0.1)
    assert any("still unwritten after 0.1s" in r.getMessage() for r in caplog.records)
    release.set()
    wait_for(lambda: not batcher._queues, timeout=5)
