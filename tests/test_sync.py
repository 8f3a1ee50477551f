"""wsbridge.async_to_sync / sync_to_async, and asgiref's own async_to_sync around a layer method."""

from __future__ import annotations

import secrets
import warnings

import pytest
from asgiref.sync import async_to_sync as asgiref_async_to_sync

from wsbridge import async_to_sync, sync_to_async
from wsbridge.layers.memory import MemoryLayer


@pytest.fixture
def memory():
    layer = MemoryLayer()
    yield layer
    layer.close()


@pytest.fixture
def redis_layer():
    from wsbridge.layers.redis import RedisLayer

    layer = RedisLayer(hosts=["redis://127.0.0.1:6379/0"], prefix=f"wsbt13s{secrets.token_hex(4)}")
    yield layer
    layer.flush()
    layer.close()


def test_async_to_sync_calls_a_layer_method_directly_as_channels_code_writes_it(memory):
    channel = async_to_sync(memory.new_channel)()
    async_to_sync(memory.group_add)("room", channel)
    skipped = async_to_sync(memory.group_send)("room", {"type": "chat.message", "text": "hi"})
    assert skipped == 0
    assert memory.receive(channel, timeout=1) == {"type": "chat.message", "text": "hi"}
    assert async_to_sync(memory.send) == memory.send


def test_sync_to_async_calls_plain_callables_bare_called_or_as_a_decorator():
    def double(x):
        return 2 * x

    assert sync_to_async(double)(4) == 8
    assert sync_to_async(double, thread_sensitive=False)(5) == 10

    @sync_to_async
    def bare(x):
        return x + 1

    @sync_to_async(thread_sensitive=True)
    def called(x):
        return x - 1

    assert (bare(1), called(1)) == (2, 0)


def test_coroutine_functions_are_refused_with_what_to_do():
    async def fetch():
        return 1

    class Handler:
        async def __call__(self):
            return 1

    for adapter in (async_to_sync, sync_to_async):
        with pytest.raises(TypeError, match="runs no event loop.*drop async/await"):
            adapter(fetch)
        with pytest.raises(TypeError, match="runs no event loop"):
            adapter(Handler())
    with pytest.raises(TypeError, match="takes a callable"):
        async_to_sync(42)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_asgirefs_async_to_sync_around_a_layer_method_names_the_one_line_fix(kind, memory, request):
    layer = memory if kind == "memory" else request.getfixturevalue("redis_layer")
    channel = layer.new_channel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # asgiref's own "non-async-marked callable"
        with pytest.raises(TypeError) as info:
            asgiref_async_to_sync(layer.group_add)("room", channel)
        with pytest.raises(TypeError, match=r"channel_layer\.send\(\) is synchronous"):
            asgiref_async_to_sync(layer.send)(channel, {"type": "x"})
    message = str(info.value)
    assert "from wsbridge import async_to_sync" in message
    assert "group_add() is synchronous in wsbridge" in message
    # refused before it ran: nothing joined, nothing sent
    assert layer.group_channels("room") == []
    assert layer.receive(channel, timeout=0.05) is None


def test_a_layer_method_run_as_a_greenlet_has_no_caller_frame_and_still_works(memory):
    import gevent

    channel = memory.new_channel()
    gevent.spawn(memory.send, channel, {"type": "from.greenlet"}).join(timeout=5)
    assert memory.receive(channel, timeout=1) == {"type": "from.greenlet"}
