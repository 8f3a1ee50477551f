"""One layer per process: the order of precedence, applied once (wsbridge.layers)."""

from __future__ import annotations

import pytest

import wsbridge
from wsbridge import Channel, Group, get_channel_layer
from wsbridge.layers import channel_layer_source, configure, install_channel_layer
from wsbridge.layers.memory import MemoryLayer


@pytest.fixture(autouse=True)
def no_layer_yet(monkeypatch):
    from wsbridge import layers

    monkeypatch.delenv("WSBRIDGE_LAYER", raising=False)
    configure(None)
    layers._layers.clear()
    layers._sources.clear()
    yield
    configure(None)


def site(environ, start_response):
    start_response("200 OK", [])
    return [b""]


def test_wrap_layer_is_what_get_channel_layer_group_and_channel_use():
    layer = MemoryLayer()
    wsbridge.wrap(site, layer=layer)
    assert get_channel_layer() is layer
    assert Group("room").channel_layer is layer
    assert Channel("jobs").channel_layer is layer
    assert channel_layer_source() == "explicit"


def test_settings_do_not_replace_a_stronger_layer():
    served = MemoryLayer()
    install_channel_layer(served, "serve")
    configure({"default": {"BACKEND": "memory"}})  # what Django's ready() does later
    assert get_channel_layer() is served
    assert channel_layer_source() == "serve"


def test_env_wins_over_settings_and_settings_over_the_default(monkeypatch):
    configure({"default": {"BACKEND": "memory", "CONFIG": {"capacity": 7}}})
    assert get_channel_layer().capacity == 7
    assert channel_layer_source() == "settings"
    monkeypatch.setenv("WSBRIDGE_LAYER", "memory")
    configure({"default": {"BACKEND": "memory", "CONFIG": {"capacity": 7}}})
    assert get_channel_layer().capacity == 100
    assert channel_layer_source() == "env"


def test_a_weaker_source_keeps_the_stronger_layer():
    explicit = MemoryLayer()
    install_channel_layer(explicit, "explicit")
    assert install_channel_layer(MemoryLayer(), "serve") is explicit
    assert get_channel_layer() is explicit


def test_nothing_configured_is_the_in_memory_default():
    assert isinstance(get_channel_layer(), MemoryLayer)
    assert channel_layer_source() == "default"


def test_a_closed_process_layer_is_chosen_again():
    from wsbridge.layers.redis import RedisLayer

    layer = RedisLayer(hosts=["redis://127.0.0.1:6379/0"], prefix="wsbsel")
    install_channel_layer(layer, "explicit")
    layer.close()
    assert isinstance(get_channel_layer(), MemoryLayer)
