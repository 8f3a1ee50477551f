"""The layers' internal components: local buffers, the layout strategy and its context."""

from __future__ import annotations

import inspect
import time

import gevent
import pytest

from wsbridge.drops import drop_counts, reset_drop_counts
from wsbridge.layers.base import CapacityTable
from wsbridge.layers.buffer import LocalBuffers
from wsbridge.layers.redis.cluster import ClusterLayout
from wsbridge.layers.redis.codec import Codec
from wsbridge.layers.redis.interop import ChannelsRedisLayout
from wsbridge.layers.redis.layout import Layout, LayoutContext
from wsbridge.layers.redis.native import NativeLayout
from wsbridge.layers.redis.ring import HashRing
from wsbridge.layers.serializers import get_serializer

LAYOUTS = [NativeLayout, ClusterLayout, ChannelsRedisLayout]


def _protocol_members() -> dict[str, object]:
    return {
        name: value
        for name, value in vars(Layout).items()
        if not name.startswith("_") and callable(value)
    }


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda c: c.__name__)
def test_every_layout_implements_the_layout_protocol_with_its_signatures(layout):
    for name, member in _protocol_members().items():
        implemented = getattr(layout, name, None)
        assert implemented is not None, f"{layout.__name__} lacks {name}"
        want = list(inspect.signature(member).parameters)
        got = list(inspect.signature(implemented).parameters)
        assert got == want, f"{layout.__name__}.{name}{got} differs from the protocol {want}"
    instance = layout(_context())
    for attribute in Layout.__annotations__:
        assert isinstance(getattr(instance, attribute), (str, tuple)), attribute


def _context(**overrides) -> LayoutContext:
    options = dict(
        prefix="p",
        shards=[],
        ring=HashRing(["a"]),
        codec=Codec(get_serializer("msgpack"), expiry=60, crypter=None, max_message_size=1024),
        expiry=60.0,
        group_expiry=86400.0,
        get_capacity=CapacityTable(100),
        process_capacity=10,
        lease=30.0,
        client_prefix="abc123",
    )
    options.update(overrides)
    return LayoutContext(**options)


def test_the_context_knows_this_processs_channels_and_follows_a_new_identity():
    ctx = _context()
    assert ctx.is_local("specific.abc123!x1")
    assert not ctx.is_local("specific.other!x1")
    assert not ctx.is_local("named.channel")
    ctx.client_prefix = "def456"  # what the layer does after a fork
    assert ctx.is_local("specific.def456!x1") and not ctx.is_local("specific.abc123!x1")


def test_the_context_counts_into_the_layers_counters():
    counters = {"bad_items": 0}
    ctx = _context(counters=counters)
    assert ctx.count("restore_failed") == 1 and ctx.count("restore_failed", 2) == 3
    assert counters == {"bad_items": 0, "restore_failed": 3}


def test_the_layouts_capabilities_are_what_the_layer_adds():
    ctx = _context()
    assert set(NativeLayout(ctx).extensions) == {"presence", "history", "at_least_once"}
    assert ChannelsRedisLayout(ctx).extensions == ()
    assert ChannelsRedisLayout(ctx).history_store() is None
    assert ChannelsRedisLayout(ctx).process_leases() is None
    assert NativeLayout(_context(lease=0)).process_leases() is None


def test_a_local_buffer_keeps_order_and_refuses_past_capacity():
    buffers = LocalBuffers()
    assert buffers.put("c", {"n": 1}, capacity=2, ttl=60)
    assert buffers.put("c", {"n": 2}, capacity=2, ttl=60)
    assert not buffers.put("c", {"n": 3}, capacity=2, ttl=60)
    assert buffers.depths() == {"c": 2} and buffers.total() == 2
    assert buffers.receive("c", None) == {"n": 1}
    assert buffers.receive("c", None) == {"n": 2}
    assert "c" not in buffers  # an emptied buffer nobody waits on goes


def test_a_local_buffer_drops_expired_messages_and_counts_them():
    reset_drop_counts()
    now = [1000.0]
    buffers = LocalBuffers(clock=lambda: now[0], expired_detail="x {channel}")
    buffers.put("c", {"n": 1}, capacity=5, ttl=1)
    now[0] += 2
    assert buffers.receive("c", time.monotonic()) is None
    assert drop_counts().get("expired") == 1


def test_a_receiver_waits_for_a_put_and_is_woken_by_clear():
    buffers = LocalBuffers()
    waiter = gevent.spawn(buffers.receive, "c", time.monotonic() + 5)
    gevent.sleep(0.01)
    buffers.put("c", {"n": 1}, capacity=5, ttl=60)
    assert waiter.get(timeout=1) == {"n": 1}
    waiter = gevent.spawn(buffers.receive, "c", time.monotonic() + 0.2)
    gevent.sleep(0.01)
    buffers.clear()  # looks the channel up again, finds nothing, times out
    assert waiter.get(timeout=1) is None


def test_taking_all_hands_over_in_order_and_forgets_the_buffer():
    buffers = LocalBuffers()
    for n in range(3):
        buffers.put("c", {"n": n}, capacity=5, ttl=60)
    assert buffers.take_all("c") == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert buffers.take_all("c") == [] and len(buffers) == 0


def test_only_a_shared_layer_says_it_can_hand_off_a_long_poll_session():
    from wsbridge.layers.memory import MemoryLayer
    from wsbridge.layers.redis import RedisLayer

    memory = MemoryLayer()
    redis_layer = RedisLayer(hosts=["redis://127.0.0.1:6379/0"], prefix="wsbtestcaps")
    try:
        assert "handoff" not in memory.extensions and "shared" not in memory.extensions
        assert {"handoff", "shared"} <= set(redis_layer.extensions)
        compat = RedisLayer(hosts=["redis://127.0.0.1:6379/0"], compat="channels_redis")
        assert "handoff" in compat.extensions and "presence" not in compat.extensions
        compat.close()
    finally:
        redis_layer.close()
        memory.close()


def test_a_layer_can_be_autospecced_by_users_tests():
    # mock asks asyncio.iscoroutinefunction about every method: a refusal of
    # asgiref's async_to_sync must not hang on that question (it is asked at call time).
    from unittest import mock

    from wsbridge.layers.memory import MemoryLayer

    spec = mock.create_autospec(MemoryLayer(), instance=True)
    spec.group_send("room", {"type": "x"})
    spec.group_send.assert_called_once_with("room", {"type": "x"})
