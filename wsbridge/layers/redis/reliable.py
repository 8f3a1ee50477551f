"""At-least-once receive on named channels: reserve, run, acknowledge.

``layer.reserve(channel, timeout, visibility)`` takes the next message off
the channel's list *and* keeps it in the channel's in-flight sorted set
(``<list key>$inflight``, score = the time its visibility ends) in one Lua
script; ``layer.ack(channel, receipt)`` removes it once the consumer has
finished. A message whose reservation is not acknowledged in time (the
worker was killed, or froze) goes back to the head of the list at the next
``reserve`` on that channel, by any process, and is delivered again.

So a message is delivered *at least* once: consumers of such channels must
be idempotent (a worker killed after the work but before the ack runs it
twice). A message still expires ``expiry`` seconds after it was sent, in
flight or not: a redelivery never resurrects an expired message, which also
bounds how often a message that kills its worker comes back.

Only the native layout (and the cluster layout: both keys share a hash tag)
supports it; the channels_redis layout has no such structure.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import gevent

from ...exceptions import MessageDecodeError
from . import scripts

if TYPE_CHECKING:
    from .native import NativeLayout

__all__ = ["reserve", "ack", "INFLIGHT_SUFFIX"]

INFLIGHT_SUFFIX = "$inflight"
#: Polling pace while a reserve waits: starts fast, backs off to this.
MAX_POLL = 0.2


def _keys(layout: NativeLayout, channel: str) -> list[str]:
    key = layout.channel_key(channel)
    return [key, key + INFLIGHT_SUFFIX]


def reserve(
    layout: NativeLayout, channel: str, timeout: float | None, visibility: float
) -> tuple[dict[str, Any], bytes] | None:
    """The next message of ``channel`` and its receipt, or None after ``timeout``.

    The wait polls (10 ms, backing off to ``MAX_POLL``): a blocking pop
    cannot also record the reservation atomically.
    """
    ctx = layout.ctx
    shard = layout.channel_shard(channel)
    script = shard.client.register_script(scripts.RESERVE)
    keys = _keys(layout, channel)
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.01
    while True:
        args = [
            int(time.time() * 1000),
            max(1, int(visibility * 1000)),
            os.urandom(8).hex(),
            max(1, int(ctx.expiry * 1000)),
        ]
        answer = shard.call(script, keys=keys, args=args)
        if answer[0]:
            ctx.count("redelivered", int(answer[0]))
        if len(answer) > 1:
            receipt = bytes(answer[1])
            try:
                decoded = layout.decode(receipt[16:])
            except MessageDecodeError as exc:
                ctx.count_bad_item(keys[0], exc)
                shard.call(shard.client.zrem, keys[1], receipt)
                continue
            if decoded is None:
                shard.call(shard.client.zrem, keys[1], receipt)
                continue
            return decoded.message, receipt
        if deadline is not None and time.monotonic() >= deadline:
            return None
        wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
        gevent.sleep(wait)
        pause = min(MAX_POLL, pause * 2)


def ack(layout: NativeLayout, channel: str, receipt: bytes) -> bool:
    """Forget a reservation; False when it had already timed out (it may run again)."""
    shard = layout.channel_shard(channel)
    return bool(shard.call(shard.client.zrem, _keys(layout, channel)[1], receipt))
