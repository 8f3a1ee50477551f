"""Presence and history on both layers: the shared suites, then what is Redis's own.

The Redis part runs on the shared Redis at 127.0.0.1:6379 under a fresh key
prefix, and starts real processes for the kill -9 lease test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from wsbridge.exceptions import ConfigurationError
from wsbridge.layers.memory import MemoryLayer

from .capabilities_conformance import GROUPS, HistoryConformance, PresenceConformance
from .conformance import Collector, wait_for
from .redis_helpers import SHARED_REDIS, make_layer_factory


@pytest.fixture
def memory_factory():
    made: list[MemoryLayer] = []

    def make(**options) -> MemoryLayer:
        layer = MemoryLayer(**options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        layer.close()


class TestMemoryHistory(HistoryConformance):
    @pytest.fixture
    def make_layer(self, memory_factory):
        return memory_factory


class TestMemoryPresence(PresenceConformance):
    @pytest.fixture
    def make_layer(self, memory_factory):
        return memory_factory


@pytest.fixture
def redis_factory():
    with make_layer_factory() as make:
        yield make


@pytest.mark.redis
class TestRedisHistory(HistoryConformance):
    shared = True

    @pytest.fixture
    def make_layer(self, redis_factory):
        return redis_factory


@pytest.mark.redis
class TestRedisPresence(PresenceConformance):
    @pytest.fixture
    def make_layer(self, redis_factory):
        return redis_factory


# -- Redis only ---------------------------------------------------------------------------


def _member(layer, group, collector=None):
    channel = layer.new_channel()
    layer.attach(channel, collector if collector is not None else Collector())
    layer.group_add(group, channel)
    return channel


@pytest.mark.redis
def test_presence_spans_processes_and_a_user_joins_once_across_them(redis_factory):
    one, two = redis_factory(groups=GROUPS), redis_factory(groups=GROUPS)
    got = Collector()
    _member(one, "chat.a", got)
    a, b = _member(one, "chat.a"), _member(two, "chat.a")
    assert one.presence_track("chat.a", a, user="u1") is True
    assert two.presence_track("chat.a", b, user="u1") is False
    assert {e.channel for e in two.presence("chat.a")} == {a, b}
    assert one.presence_untrack("chat.a", a) is False
    assert two.presence_untrack("chat.a", b) is True
    wait_for(lambda: len(got.messages) >= 2)
    assert [m["type"] for m in got.messages] == ["presence.join", "presence.leave"]


@pytest.mark.redis
def test_history_keys_carry_the_group_in_a_hash_tag(redis_factory):
    layer = redis_factory(groups=GROUPS)
    layer.group_send("news", {"type": "n"})
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = sorted(k.decode() for k in client.scan_iter(match=redis_factory.prefix + ":1:h*"))
    prefix = redis_factory.prefix
    assert keys == [f"{prefix}:1:hist:{{news}}", f"{prefix}:1:hmeta:{{news}}"]


@pytest.mark.redis
def test_losing_the_history_keys_changes_the_epoch(redis_factory):
    layer = redis_factory(groups=GROUPS)
    layer.group_send("news", {"type": "n"})
    before = layer.history("news").position
    client = redis.Redis.from_url(SHARED_REDIS)
    client.delete(f"{redis_factory.prefix}:1:hmeta:{{news}}")  # as if Redis lost it
    layer.group_send("news", {"type": "n"})
    after = layer.history("news")
    assert after.position.epoch != before.epoch and after.position.offset == 1
    assert layer.history("news", since=before).recovered is False
    assert len(after.messages) == 1  # the old stream went with its epoch


@pytest.mark.redis
def test_history_needs_the_native_layout():
    with pytest.raises(ConfigurationError, match="native"):
        with make_layer_factory(compat="channels_redis") as make:
            make(groups=GROUPS)


def _two_watching(redis_factory, lease):
    """Two live processes tracked in chat.a (their lease loops run); the first collects."""
    watcher = redis_factory(groups=GROUPS, presence_lease=lease)
    other = redis_factory(groups=GROUPS, presence_lease=lease)
    got = Collector()
    watcher.presence_track("chat.a", _member(watcher, "chat.a", got), user="watcher")
    other.presence_track("chat.a", _member(other, "chat.a"), user="other")
    return watcher, other, got


LEASE_CHILD = textwrap.dedent(
    """
    import sys, time
    from wsbridge.layers.redis import RedisLayer
    layer = RedisLayer(hosts=[sys.argv[1]], prefix=sys.argv[2], presence_lease=float(sys.argv[3]),
                       groups={"chat.*": {"presence": True}})
    channel = layer.new_channel()
    layer.attach(channel, lambda m: None)
    layer.group_add("chat.a", channel)
    layer.presence_track("chat.a", channel, user="victim")
    print("tracked", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.redis
def test_a_process_killed_9_has_its_entries_removed_and_one_leave_sent_within_the_lease(
    redis_factory,
):
    lease = 1.5
    watcher, other, got = _two_watching(redis_factory, lease)
    child = subprocess.Popen(
        [sys.executable, "-c", LEASE_CHILD, SHARED_REDIS, redis_factory.prefix, str(lease)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "tracked"
        wait_for(lambda: any(m.get("user") == "victim" for m in got.messages))
        assert "victim" in {e.user for e in watcher.presence("chat.a")}
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        child.wait(5)
        wait_for(lambda: "victim" not in {e.user for e in watcher.presence("chat.a")}, timeout=10)
        elapsed = time.monotonic() - killed_at
        wait_for(lambda: any(m["type"] == "presence.leave" for m in got.messages))
        time.sleep(lease)  # both live processes reap: still one leave
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    leaves = [m for m in got.messages if m["type"] == "presence.leave"]
    assert [m["user"] for m in leaves] == ["victim"]
    assert elapsed < lease * 2 + 1  # generous: lease + a third of it, plus load
    assert {e.user for e in watcher.presence("chat.a")} == {"watcher", "other"}


KILLED_BEFORE_THE_EVENT = textwrap.dedent(
    """
    import os, signal, sys
    from wsbridge.layers.redis import RedisLayer
    layer = RedisLayer(hosts=[sys.argv[1]], prefix=sys.argv[2], presence_lease=float(sys.argv[3]),
                       groups={"chat.*": {"presence": True}})
    send = layer.group_send
    def group_send(group, message):
        if message["type"] == "presence.join":  # the change is in Redis, its event not sent
            print("changed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        send(group, message)
    layer.group_send = group_send
    channel = layer.new_channel()
    layer.attach(channel, lambda m: None)
    layer.group_add("chat.a", channel)
    layer.presence_track("chat.a", channel, user="victim")
    """
)


@pytest.mark.redis
def test_a_process_killed_between_a_change_and_its_event_has_the_event_sent_by_its_reaper(
    redis_factory,
):
    lease = 1.5
    watcher, other, got = _two_watching(redis_factory, lease)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_BEFORE_THE_EVENT,
            SHARED_REDIS,
            redis_factory.prefix,
            str(lease),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert child.returncode == -signal.SIGKILL and child.stdout.strip() == "changed"
    wait_for(lambda: any(m["type"] == "presence.leave" for m in got.messages), timeout=10)
    time.sleep(lease)  # both live processes reap: still one join and one leave
    victim = [(m["type"], m["seq"]) for m in got.messages if m.get("user") == "victim"]
    assert [kind for kind, _ in victim] == ["presence.join", "presence.leave"]
    assert victim[0][1] < victim[1][1]
    assert watcher.presence_store.claimed_events + other.presence_store.claimed_events == 1
    client = redis.Redis.from_url(SHARED_REDIS)
    assert client.hlen(f"{redis_factory.prefix}:1:pout:{{chat.a}}") == 0  # nothing left over


@pytest.mark.redis
def test_a_reconnect_storm_of_1000_recovers_every_one_in_order(redis_factory):
    import gevent

    from wsbridge.layers.history import Position

    groups = {"storm": {"history": 20}}
    publisher, layer = redis_factory(groups=groups), redis_factory(groups=groups)
    for i in range(20):
        publisher.group_send("storm", {"type": "n", "i": i})
    first = Position.parse(publisher.history("storm").messages[0]["position"])
    since = str(Position(first.epoch, first.offset - 1))
    outcomes = []

    def reconnect() -> None:
        got = Collector()
        channel = layer.new_channel()
        layer.attach(channel, got)
        layer.request_recovery(channel, {"storm": since})
        layer.group_add("storm", channel)
        outcomes.append((got.messages[0]["recovered"], len(got.messages)))

    greenlets = [gevent.spawn(reconnect) for _ in range(1000)]  # the pool holds 64
    gevent.joinall(greenlets, timeout=60)
    assert len(outcomes) == 1000
    assert set(outcomes) == {(True, 21)}  # the notice and all 20, for every one


@pytest.mark.redis
def test_a_live_message_arriving_while_the_join_is_written_is_held_not_delivered_twice(
    redis_factory,
):
    # The CI failure of examples/chat's kill -9 test: the membership was in
    # Redis, a live message reached the channel during the join's own I/O,
    # before the history read, and came again with the recovered ones.
    groups = {"room": {"history": 20}}
    publisher, layer = redis_factory(groups=groups), redis_factory(groups=groups)
    witness = Collector()  # a member that is not recovering: it shows the live one arrived
    layer.attach(witness_channel := layer.new_channel(), witness)
    layer.group_add("room", witness_channel)
    publisher.group_send("room", {"type": "n", "i": 0})
    seen = publisher.history("room").position
    publisher.group_send("room", {"type": "n", "i": 1})
    join = layer.memberships.join

    def join_then_a_live_message_arrives(group, channel, *, local):
        join(group, channel, local=local)
        if channel != witness_channel:
            publisher.group_send("room", {"type": "n", "i": 2})
            wait_for(lambda: [m["i"] for m in witness.messages] == [0, 1, 2])

    layer.memberships.join = join_then_a_live_message_arrives
    got = Collector()
    channel = layer.new_channel()
    layer.attach(channel, got)
    layer.request_recovery(channel, {"room": str(seen)})
    layer.group_add("room", channel)
    publisher.group_send("room", {"type": "n", "i": 3})
    messages = got.wait(4)
    assert messages[0]["type"] == "history.recovery" and messages[0]["missed"] == 2
    assert [m["i"] for m in messages[1:]] == [1, 2, 3]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_stats_count_recoveries_and_refused_tracks(backend, memory_factory, redis_factory):
    make = memory_factory if backend == "memory" else redis_factory
    layer = make(groups=GROUPS, presence_info_limit=16)
    channel = _member(layer, "news")
    layer.request_recovery(channel, {"news": "lost:1"})
    layer.group_discard("news", channel)
    layer.group_add("news", channel)
    with pytest.raises(ValueError):
        layer.presence_track("news", channel, info={"x": "y" * 40})
    stats = layer.stats()
    assert stats["history"]["not_recovered"] == 1
    assert stats["presence"]["refused"] == 1


def test_recovered_messages_that_find_the_mailbox_full_are_counted_as_drops(memory_factory):
    from wsbridge.drops import drop_counts
    from wsbridge.exceptions import ChannelFull

    layer = memory_factory(groups=GROUPS)
    for i in range(5):
        layer.group_send("news", {"type": "n", "i": i})
    taken = []

    def small_mailbox(message):
        if len(taken) >= 3:
            raise ChannelFull("mailbox full")
        taken.append(message)

    before = drop_counts().get("mailbox_full", 0)
    channel = layer.new_channel()
    layer.attach(channel, small_mailbox)
    first = layer.history("news").messages[0]["position"]
    layer.request_recovery(channel, {"news": first})
    layer.group_add("news", channel)
    assert [m.get("i") for m in taken] == [None, 1, 2]  # the notice, then two
    assert drop_counts().get("mailbox_full", 0) - before == 2
    assert layer.stats()["history"]["recovery_dropped_full"] == 2


@pytest.mark.redis
def test_during_the_restore_window_a_history_send_refuses_and_writes_no_history(redis_factory):
    from wsbridge.exceptions import LayerUnavailable

    layer = redis_factory(groups=GROUPS)
    layer.group_send("news", {"type": "n", "i": 0})
    client = redis.Redis.from_url(SHARED_REDIS)
    client.set(layer.layout.restore_key, b"1", px=5000)  # what a shard sets after a restart
    try:
        with pytest.raises(LayerUnavailable):
            layer.group_send("news", {"type": "n", "i": 1})
    finally:
        client.delete(layer.layout.restore_key)
    assert [m["i"] for m in layer.history("news").messages] == [0]


# A live serving process until it is killed: patched, so its reader and presence greenlets
# renew both leases. (With a blocking time.sleep() the child stopped renewing at once, and a
# reap that fell between its first renewal and its join left a member no lease covered.)
BOTH_LEASES_CHILD = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import sys
    import gevent
    from wsbridge.layers.redis import RedisLayer
    layer = RedisLayer(hosts=[sys.argv[1]], prefix=sys.argv[2], presence_lease=float(sys.argv[3]),
                       lease=float(sys.argv[4]), groups={"chat.*": {"presence": True}})
    channel = layer.new_channel()
    layer.attach(channel, lambda m: None)
    layer.group_add("chat.a", channel)
    layer.presence_track("chat.a", channel, user="victim")
    while not layer.leases.held:
        gevent.sleep(0.01)
    print(channel, flush=True)
    gevent.sleep(60)
    """
)


@pytest.mark.redis
@pytest.mark.parametrize(
    ("presence_lease", "lease"),
    [(2.5, 0.6), (0.6, 2.0)],
    ids=["memberships-reaped-first", "presence-reaped-first"],
)
def test_a_killed_process_loses_its_memberships_and_its_entries_whichever_reaper_runs_first(
    redis_factory, presence_lease, lease
):
    # The two reapers kept their lists of a process's groups in one key, and each
    # deleted it when done: the second found nothing, so the dead process stayed
    # online (no leave sent) or stayed a member of its groups.
    watcher = redis_factory(groups=GROUPS, presence_lease=presence_lease, lease=lease)
    got = Collector()
    watcher.presence_track("chat.a", _member(watcher, "chat.a", got), user="watcher")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BOTH_LEASES_CHILD,
            SHARED_REDIS,
            redis_factory.prefix,
            str(presence_lease),
            str(lease),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        victim = child.stdout.readline().strip()
        assert victim in watcher.group_channels("chat.a")
        wait_for(lambda: "victim" in {e.user for e in watcher.presence("chat.a")})
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        bound = max(presence_lease, lease) * 2 + 5
        wait_for(lambda: victim not in watcher.group_channels("chat.a"), timeout=bound)
        wait_for(
            lambda: "victim" not in {e.user for e in watcher.presence("chat.a")}, timeout=bound
        )
        wait_for(lambda: any(m["type"] == "presence.leave" for m in got.messages), timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    assert [m["user"] for m in got.messages if m["type"] == "presence.leave"] == ["victim"]
