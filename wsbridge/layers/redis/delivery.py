"""Delivery inside this process: attached callbacks and local buffers.

What a reader takes off this process's inbox goes to the channel's
``attach()`` callback, or, for a channel read with ``receive()``, into a
:class:`~wsbridge.layers.buffer.LocalBuffer` (the class the memory layer
uses too). Everything here is in-process: no Redis.
"""

from __future__ import annotations

import logging
import time

from ...drops import record_drop
from ...exceptions import ChannelFull
from ..base import Callback, Message
from ..buffer import LocalBuffers
from .layout import LayoutContext

__all__ = ["LocalDelivery"]

logger = logging.getLogger("wsbridge.layers.redis")

#: Sweep the buffers of channels nobody reads every this many new buffers.
SWEEP_EVERY = 1024


class LocalDelivery:
    """Callbacks and buffers of this process's channels (counters in ``ctx.counters``)."""

    def __init__(self, ctx: LayoutContext) -> None:
        self.ctx = ctx
        self.attached: dict[str, Callback] = {}
        #: Items carry wall-clock expiry times: the buffers read ``time.time``.
        self.buffers = LocalBuffers(time.time, "channel {channel}, never received")

    def attach(self, channel: str, callback: Callback) -> None:
        """Deliver ``channel`` to ``callback`` from now on, starting with what is buffered."""
        self.attached[channel] = callback
        for message in self.buffers.take_all(channel):
            self.call(channel, callback, message)

    def detach(self, channel: str) -> None:
        self.attached.pop(channel, None)
        self.buffers.drop(channel)

    def receive(self, channel: str, deadline: float | None) -> Message | None:
        """The next buffered message of ``channel``, waiting until ``deadline`` (monotonic)."""
        return self.buffers.receive(channel, deadline)

    def deliver(self, channel: str, message: Message) -> None:
        """Hand ``message`` to ``channel``'s callback, or buffer it (a full buffer drops it)."""
        callback = self.attached.get(channel)
        if callback is not None:
            self.call(channel, callback, message)
            return
        if not self.ctx.is_local(channel):
            return  # not ours (a foreign writer): nothing to do with it
        new = channel not in self.buffers
        if not self.buffers.put(channel, message, self.ctx.get_capacity(channel), self.ctx.expiry):
            self.ctx.count("dropped_full")
            record_drop("queue_full", detail=f"channel {channel}, nobody receiving")
            return
        if new and len(self.buffers) % SWEEP_EVERY == 0:
            self.buffers.sweep()

    def call(self, channel: str, callback: Callback, message: Message) -> None:
        try:
            callback(message)
            self.ctx.count("delivered")
        except ChannelFull:
            self.ctx.count("dropped_full")
            record_drop("mailbox_full", detail=f"connection {channel}")
        except Exception:
            logger.exception("attach() callback for %s raised; message dropped", channel)
            record_drop("callback_error", detail=f"connection {channel}")

    def clear(self) -> None:
        self.attached.clear()
        self.buffers.clear()
