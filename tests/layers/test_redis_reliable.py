"""reserve()/ack(): the Redis layer's at-least-once receive, on one Redis and the cluster."""

from __future__ import annotations

import time

import pytest

from wsbridge.exceptions import InvalidChannelName

from .redis_helpers import SHARED_REDIS, make_layer_factory

pytestmark = pytest.mark.redis


@pytest.fixture(params=["redis", "cluster"])
def make(request):
    if request.param == "cluster":
        from .test_redis_cluster import cluster_layers

        with cluster_layers(request.getfixturevalue("redis_cluster")) as factory:
            yield factory
    else:
        with make_layer_factory(hosts=[SHARED_REDIS]) as factory:
            yield factory


def test_an_unacked_message_comes_back_after_its_visibility_timeout(make):
    worker_a, worker_b = make(), make()
    worker_a.send("rel.jobs", {"type": "job", "n": 1})
    # 1.5 s, not less: on a loaded machine the next line can come 0.3 s later
    # (it did, on a matrix row), and the message is then rightly visible again.
    message, _receipt = worker_a.reserve("rel.jobs", timeout=1, visibility=1.5)
    reserved_at = time.monotonic()
    assert message == {"type": "job", "n": 1}
    assert worker_b.reserve("rel.jobs", timeout=0) is None  # in flight, invisible
    again = worker_b.reserve("rel.jobs", timeout=5, visibility=5)  # waits for it
    assert time.monotonic() - reserved_at >= 1.4  # not before its visibility timeout
    assert again is not None and again[0] == message
    assert worker_b.counters["redelivered"] == 1
    assert worker_b.ack("rel.jobs", again[1]) is True
    time.sleep(0.1)
    assert worker_a.reserve("rel.jobs", timeout=0.2) is None


def test_an_acked_message_is_gone_and_a_late_ack_says_so(make):
    layer = make()
    layer.send("rel.once", {"type": "job"})
    layer.send("rel.once", {"type": "job2"})
    message, receipt = layer.reserve("rel.once", timeout=1, visibility=10)
    assert layer.ack("rel.once", receipt) is True
    second, late = layer.reserve("rel.once", timeout=1, visibility=0.05)
    assert second == {"type": "job2"}
    time.sleep(0.1)
    assert layer.reserve("rel.once", timeout=0.5, visibility=10)[0] == {"type": "job2"}
    assert layer.ack("rel.once", late) is False  # it had been given out again


def test_order_is_kept_and_a_redelivered_message_goes_first(make):
    layer = make()
    for n in range(3):
        layer.send("rel.order", {"type": "job", "n": n})
    first, _ = layer.reserve("rel.order", timeout=1, visibility=0.1)
    time.sleep(0.15)
    got = []
    for _ in range(3):
        message, receipt = layer.reserve("rel.order", timeout=1, visibility=10)
        got.append(message["n"])
        layer.ack("rel.order", receipt)
    assert first["n"] == 0 and got == [0, 1, 2]


def test_expired_messages_are_not_redelivered(make):
    layer = make(expiry=0.3)
    layer.send("rel.exp", {"type": "job"})
    assert layer.reserve("rel.exp", timeout=1, visibility=0.05) is not None
    time.sleep(0.4)
    assert layer.reserve("rel.exp", timeout=0.2) is None


def test_process_specific_channels_cannot_be_reserved(make):
    layer = make()
    with pytest.raises(InvalidChannelName):
        layer.reserve(layer.new_channel(), timeout=0)
    assert "at_least_once" in layer.extensions
