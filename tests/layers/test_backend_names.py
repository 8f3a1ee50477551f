"""Channels BACKEND names: 4.x names map silently, 1.x names map with a deprecation warning."""

from __future__ import annotations

import warnings

import pytest

from wsbridge import exceptions
from wsbridge.exceptions import WsbridgeDeprecationWarning
from wsbridge.layers import backend_class_path, build_layer, resolve_backend
from wsbridge.layers.memory import MemoryLayer


@pytest.fixture(autouse=True)
def fresh_warnings():
    exceptions._warned.clear()
    yield
    exceptions._warned.clear()


@pytest.mark.parametrize(
    ("backend", "target", "short"),
    [
        ("asgi_redis.RedisChannelLayer", "wsbridge.layers.redis.RedisLayer", "redis"),
        ("asgiref.inmemory.ChannelLayer", "wsbridge.layers.memory.MemoryLayer", "memory"),
        ("asgi_ipc.IPCChannelLayer", "wsbridge.layers.memory.MemoryLayer", "memory"),
    ],
)
def test_channels1_backend_names_map_with_a_warning_naming_the_new_one(backend, target, short):
    with pytest.warns(WsbridgeDeprecationWarning, match=f"Write BACKEND '{short}' instead"):
        path, _ = resolve_backend(backend, {})
    assert path == target
    assert backend_class_path(backend) == target


def test_ipc_options_the_memory_layer_lacks_are_dropped_and_named(caplog):
    spec = {
        "BACKEND": "asgi_ipc.IPCChannelLayer",
        "CONFIG": {"prefix": "mysite", "channel_memory": 10**8, "capacity": 7},
    }
    with pytest.warns(WsbridgeDeprecationWarning) as seen:
        layer = build_layer(spec)
    try:
        assert isinstance(layer, MemoryLayer) and layer.capacity == 7
    finally:
        layer.close()
    text = str(seen[0].message)
    assert "ignored: channel_memory, prefix" in text and "this process only" in text
    assert any("deprecated:" in r.getMessage() for r in caplog.records)


def test_channels4_and_short_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("channels_redis.core.RedisChannelLayer", {})[0].endswith(
            "RedisLayer"
        )
        assert resolve_backend("memory", {"capacity": 3}) == (
            "wsbridge.layers.memory.MemoryLayer",
            {"capacity": 3},
        )
