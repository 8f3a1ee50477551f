"""Local buffers: messages for this process's channels, waiting to be received.

Both layers keep one :class:`LocalBuffer` per channel that has messages
nobody attached to: the memory layer for every channel, the Redis layer for
its own process-specific channels read with ``receive()`` (the reader
greenlet puts them there). :class:`LocalBuffers` is the table of them, with
the one receive loop, expiry and sweep rules both layers share. A message
that expires unreceived is counted as a drop (``expired``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from gevent.event import Event

from ..drops import record_drop
from .base import Message

__all__ = ["LocalBuffer", "LocalBuffers"]


class LocalBuffer:
    """The waiting messages of one channel, oldest first, and an event for receivers."""

    __slots__ = ("items", "event", "waiters")

    def __init__(self) -> None:
        #: ``(expires_at, message)``, in arrival order.
        self.items: deque[tuple[float, Message]] = deque()
        self.event = Event()
        self.waiters = 0

    def __len__(self) -> int:
        return len(self.items)

    def expire(self, now: float) -> int:
        """Drop the messages whose time ran out; return how many went."""
        items = self.items
        expired = 0
        while items and items[0][0] < now:
            items.popleft()
            expired += 1
        return expired

    def push(self, expires_at: float, message: Message) -> None:
        self.items.append((expires_at, message))
        self.event.set()


class LocalBuffers:
    """Buffers by channel name, on one clock.

    Args:
        clock: the clock expiry times are read on (``time.monotonic`` in
            memory, ``time.time`` in Redis, where items carry wall times).
        expired_detail: the drop detail for a channel's expired messages
            (``{channel}`` is replaced by the channel name).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        expired_detail: str = "channel {channel}, never received",
    ) -> None:
        self.clock = clock
        self.expired_detail = expired_detail
        self._buffers: dict[str, LocalBuffer] = {}

    def __len__(self) -> int:
        return len(self._buffers)

    def __contains__(self, channel: object) -> bool:
        return channel in self._buffers

    def get(self, channel: str) -> LocalBuffer | None:
        return self._buffers.get(channel)

    def depths(self) -> dict[str, int]:
        """Waiting messages per channel, for channels that have some."""
        return {name: len(b.items) for name, b in self._buffers.items() if b.items}

    def total(self) -> int:
        return sum(len(b.items) for b in self._buffers.values())

    def expire(self, channel: str, buffer: LocalBuffer, now: float) -> None:
        expired = buffer.expire(now)
        if expired:
            record_drop("expired", expired, detail=self.expired_detail.format(channel=channel))

    def put(self, channel: str, message: Message, capacity: int, ttl: float) -> bool:
        """Queue ``message`` for ``ttl`` seconds; False (nothing queued) when at ``capacity``.

        Expired messages are dropped first, so they never count against the capacity.
        """
        buffer = self._buffers.get(channel)
        if buffer is None:
            buffer = self._buffers[channel] = LocalBuffer()
        now = self.clock()
        self.expire(channel, buffer, now)
        if len(buffer.items) >= capacity:
            return False
        buffer.push(now + ttl, message)
        return True

    def receive(self, channel: str, deadline: float | None) -> Message | None:
        """The next message of ``channel``, waiting until ``deadline`` (``time.monotonic``).

        Returns None at the deadline. A buffer dropped meanwhile (``flush``,
        ``attach``) wakes its receivers, which look the channel up again.
        """
        while True:
            buffer = self._buffers.get(channel)
            if buffer is None:
                buffer = self._buffers[channel] = LocalBuffer()
            self.expire(channel, buffer, self.clock())
            if buffer.items:
                _, message = buffer.items.popleft()
                if not buffer.items:
                    buffer.event.clear()
                    # Keep the table from growing with channels nobody uses.
                    if not buffer.waiters and self._buffers.get(channel) is buffer:
                        del self._buffers[channel]
                return message
            buffer.event.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            buffer.waiters += 1
            try:
                buffer.event.wait(remaining)
            finally:
                buffer.waiters -= 1

    def take_all(self, channel: str) -> list[Message]:
        """Remove ``channel``'s buffer; its unexpired messages in order (for ``attach``)."""
        buffer = self._buffers.pop(channel, None)
        if buffer is None:
            return []
        self.expire(channel, buffer, self.clock())
        buffer.event.set()
        return [message for _, message in buffer.items]

    def drop(self, channel: str) -> None:
        """Forget ``channel``'s messages (waiting receivers look it up again)."""
        buffer = self._buffers.pop(channel, None)
        if buffer is not None:
            buffer.event.set()

    def sweep(self) -> None:
        """Expire every buffer and drop the empty ones nobody waits on."""
        now = self.clock()
        for name, buffer in list(self._buffers.items()):
            self.expire(name, buffer, now)
            if not buffer.items and not buffer.waiters:
                del self._buffers[name]
                buffer.event.set()

    def clear(self) -> None:
        """Drop every buffer and wake every receiver."""
        buffers = list(self._buffers.values())
        self._buffers.clear()
        for buffer in buffers:
            buffer.event.set()
