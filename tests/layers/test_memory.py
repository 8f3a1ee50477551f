"""The in-memory layer: the conformance suite plus what is specific to it."""

from __future__ import annotations

import gevent
import pytest

from wsbridge.exceptions import ChannelFull, ConfigurationError
from wsbridge.layers import build_layer, configure, get_channel_layer
from wsbridge.layers.memory import InMemoryChannelLayer, MemoryLayer

from .conformance import Collector, LayerConformance


class TestMemoryLayerConformance(LayerConformance):
    @pytest.fixture
    def make_layer(self):
        made: list[MemoryLayer] = []

        def make(**options) -> MemoryLayer:
            layer = MemoryLayer(**options)
            made.append(layer)
            return layer

        yield make
        for layer in made:
            layer.close()


def test_a_full_attached_mailbox_tells_the_sender_in_process():
    layer = MemoryLayer()
    channel = layer.new_channel()

    def refuse(message):
        raise ChannelFull("mailbox full")

    layer.attach(channel, refuse)
    with pytest.raises(ChannelFull):
        layer.send(channel, {"type": "x"})
    layer.group_add("room", channel)
    assert layer.group_send("room", {"type": "x"}) == 1
    assert layer.stats()["skipped_full"] == 1


def test_unknown_options_are_refused():
    with pytest.raises(TypeError, match="hosts"):
        MemoryLayer(hosts=["redis://x"])


def test_build_layer_reads_backend_config_and_test_config():
    spec = {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": 7},
        "TEST_CONFIG": {"capacity": 3},
    }
    assert build_layer(spec).capacity == 7
    assert build_layer(spec, test=True).capacity == 3
    assert isinstance(build_layer({"BACKEND": "memory"}), InMemoryChannelLayer)


def test_build_layer_explains_a_bad_backend_or_config():
    with pytest.raises(ConfigurationError, match="nowhere.Layer"):
        build_layer({"BACKEND": "nowhere.Layer"})
    with pytest.raises(ConfigurationError, match="bad CONFIG"):
        build_layer({"BACKEND": "memory", "CONFIG": {"colour": "blue"}})


def test_channel_layers_setting_builds_one_layer_per_alias():
    configure({"default": {"BACKEND": "memory"}, "other": {"BACKEND": "memory"}})
    try:
        assert get_channel_layer() is get_channel_layer("default")
        assert get_channel_layer("other") is not get_channel_layer()
        with pytest.raises(ConfigurationError, match="missing"):
            get_channel_layer("missing")
    finally:
        configure(None)


def test_flush_wakes_nobody_but_leaves_waiting_receivers_working():
    layer = MemoryLayer()
    waiting = gevent.spawn(layer.receive, "c", 2)
    gevent.sleep(0.01)
    layer.flush()
    layer.send("c", {"type": "after.flush"})
    # Well before the receive's own 2 s timeout: flush woke it to look again.
    assert waiting.get(timeout=1) == {"type": "after.flush"}


def test_idle_channels_do_not_accumulate():
    layer = MemoryLayer(expiry=0.01)
    for i in range(5000):
        layer.send(f"gone.{i}", {"type": "x"})
    gevent.sleep(0.02)
    for i in range(5000):
        layer.send(f"again.{i}", {"type": "x"})
    assert len(layer._queues) <= 5000


def test_detach_forgets_collectors_and_groups_joined_before_attach():
    layer = MemoryLayer()
    channel = layer.new_channel()
    layer.group_add("before", channel)
    layer.attach(channel, Collector())
    layer.group_add("g", channel)
    layer.detach(channel)
    assert layer.stats()["attached"] == 0 and layer.stats()["groups"] == {}
