"""No silent window after a Redis restart: a real restart while a sender counts.

A receiving process holds a group membership; a sender group_sends a
numbered message every few milliseconds through a real ``redis-server``
that is restarted (it comes back empty) in the middle. Every send either
raises ``LayerUnavailable`` (the sender knows) or arrives: none of the sends
that returned normally after the restart may be lost, in either key format.
"""

from __future__ import annotations

import time

import gevent
import pytest

from wsbridge.exceptions import LayerUnavailable
from wsbridge.layers.redis import RedisLayer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def make(server, **options) -> RedisLayer:
    config = {"hosts": [server.url], "prefix": "window", "retry_backoff": (0.02, 0.3)}
    config.update(options)
    return RedisLayer(**config)


@pytest.mark.parametrize("compat", [None, "channels_redis"])
def test_sends_after_a_restart_arrive_or_raise_layer_unavailable(redis_server, compat):
    # Processes notice a restart at different moments (each at its own point of its
    # backoff): here the receiver late (up to 1.5 s), the sender at once.
    receiver = make(redis_server, compat=compat, retry_backoff=(0.5, 1.5), restore_window=2.5)
    sender = make(redis_server, compat=compat, retry_backoff=(0.02, 0.1), restore_window=2.5)
    arrived: set[int] = set()
    accepted: list[tuple[int, float]] = []  # (number, monotonic time the send returned)
    refused = 0
    try:
        channel = receiver.new_channel()
        receiver.attach(channel, lambda message: arrived.add(message["i"]))
        receiver.group_add("room", channel)

        def send_loop(stop_at: float) -> None:
            nonlocal refused
            i = 0
            while time.monotonic() < stop_at and i < 5000:
                try:
                    sender.group_send("room", {"type": "n", "i": i})
                    accepted.append((i, time.monotonic()))
                except LayerUnavailable:
                    refused += 1
                i += 1
                gevent.sleep(0.005)

        loop = gevent.spawn(send_loop, time.monotonic() + 7.0)
        gevent.sleep(1.0)
        redis_server.restart()  # comes back empty: the membership is gone from Redis
        back = time.monotonic()
        loop.join(15)
        gevent.sleep(1.0)  # the last deliveries
        after = [i for i, at in accepted if at > back]
        lost = sorted(set(after) - arrived)
        assert after, "no send returned normally after the restart"
        assert not lost, f"{len(lost)} of {len(after)} sends after the restart went nowhere"
        assert refused > 0  # the outage and the restore window were told to the sender
        tail = [i for i, _ in accepted[-20:]]
        assert set(tail) <= arrived and len(tail) == 20  # and sending works again
    finally:
        receiver.close()
        sender.close()
