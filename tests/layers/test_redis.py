"""The Redis layer against the real Redis on 127.0.0.1:6379: the conformance suite.

Every test uses its own random key prefix and deletes its keys afterwards;
the shared server is never flushed. Sharding, faults, integrity and
channels_redis interop have their own modules (test_redis_*.py).
"""

from __future__ import annotations

import pytest

from .conformance import LayerConformance
from .redis_helpers import make_layer_factory

pytestmark = pytest.mark.redis


class TestRedisLayerConformance(LayerConformance):
    @pytest.fixture
    def make_layer(self):
        with make_layer_factory() as make:
            yield make


class TestChannelsRedisCompatConformance(LayerConformance):
    """The same contract holds in channels_redis 4.x compatibility mode."""

    @pytest.fixture
    def make_layer(self):
        with make_layer_factory(compat="channels_redis") as make:
            yield make


# -- what is specific to the Redis layer (native layout) ------------------------------------

import redis  # noqa: E402

from .conformance import Collector, wait_for  # noqa: E402
from .redis_helpers import SHARED_REDIS  # noqa: E402


@pytest.fixture
def make():
    with make_layer_factory() as factory:
        yield factory


def test_a_group_send_pushes_one_item_per_process_whatever_the_member_count(make):
    layer = make()
    client = redis.Redis.from_url(SHARED_REDIS)
    sizes = {}
    for members in (10, 1000):
        group = f"big{members:05d}"  # same length: only the member count differs
        for i in range(members):
            layer.group_add(group, f"specific.proc{i % 2}!{i:06x}")
        inboxes = [f"{make.prefix}:1:proc:proc0", f"{make.prefix}:1:proc:proc1"]
        client.delete(*inboxes)  # the membership announcements to those (fake) processes
        layer.group_send(group, {"type": "hi", "text": "x" * 50})
        assert [client.llen(k) for k in inboxes] == [1, 1]
        sizes[members] = [len(client.lpop(k)) for k in inboxes]
    assert sizes[10] == sizes[1000]  # same bytes for 10 or 1000 members: no member list
    client.close()


def test_a_membership_added_by_another_process_is_delivered(make):
    owner, other = make(), make()
    channel = owner.new_channel()
    got = Collector()
    owner.attach(channel, got)
    other.group_add("remote.room", channel)  # e.g. a view in another process
    wait_for(lambda: owner.members.members("remote.room") == [channel])
    other.group_send("remote.room", {"type": "n", "i": 1})
    assert got.wait(1) == [{"type": "n", "i": 1}]
    other.group_discard("remote.room", channel)
    wait_for(lambda: owner.members.members("remote.room") == [])
    other.group_send("remote.room", {"type": "n", "i": 2})
    owner.send(channel, {"type": "n", "i": 3})
    assert [m["i"] for m in got.wait(2)] == [1, 3]
    assert other.group_channels("remote.room") == []


def test_two_processes_in_one_group_both_receive_and_detach_cleans_up(make):
    a, b, sender = make(), make(), make()
    got_a, got_b = Collector(), Collector()
    channels_a = [a.new_channel() for _ in range(3)]
    channel_b = b.new_channel()
    for channel in channels_a:
        a.attach(channel, got_a)
        a.group_add("room", channel)
    b.attach(channel_b, got_b)
    b.group_add("room", channel_b)
    assert sender.group_send("room", {"type": "hi"}) == 0
    assert len(got_a.wait(3)) == 3 and len(got_b.wait(1)) == 1
    for channel in channels_a:
        a.detach(channel)
    client = redis.Redis.from_url(SHARED_REDIS)
    assert client.zrange(f"{make.prefix}:1:gproc:room", 0, -1) == [b.client_prefix.encode()]
    client.close()
    assert sender.group_channels("room") == [channel_b]


def test_stats_counts_groups_members_and_queues(make):
    layer = make()
    layer.group_add("s.room", "s.a")
    layer.group_add("s.room", "s.b")
    layer.send("s.jobs", {"type": "x"})
    shard = layer.stats()["shards"][0]
    assert shard["reachable"] and shard["groups"] == {"s.room": 2}
    assert shard["queues"]["s.jobs"] == 1 and shard["delayed"] == 0


def test_a_burst_of_calls_beyond_the_pool_waits_instead_of_failing(make):
    # Thousands of sockets joining groups at once need more concurrent calls
    # than the pool has connections: they must queue for one, not be told
    # that Redis is down (LayerUnavailable).
    import gevent

    from wsbridge.layers.redis.config import POOL_SIZE

    layer = make()
    got = Collector()
    channels = [layer.new_channel() for _ in range(POOL_SIZE * 8)]
    for channel in channels:
        layer.attach(channel, got)
    jobs = [gevent.spawn(layer.group_add, "burst", channel) for channel in channels]
    gevent.joinall(jobs, timeout=30)
    assert [job.exception for job in jobs if job.exception] == []
    layer.group_send("burst", {"type": "hello"})
    assert len(got.wait(len(channels), timeout=10)) == len(channels)
