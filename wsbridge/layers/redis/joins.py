"""Group joins written together: concurrent ``group_add`` calls share round trips.

When 3,000 sockets join a room at once, each ``group_add`` used to write its
own pipeline (two ZADDs, two EXPIREs, the process's SADD and EXPIRE) in a round
trip of its own. Here the calls that arrive while a shard's previous batch is
in flight wait and go out together in the next one: one ZADD with every new
member of a group, one EXPIRE per key. A join that finds nothing in flight is
written at once by its own caller, so a lone join costs what it did and nothing
waits for a timer.

A batch belongs to one gevent hub (one thread): a thread's joins never wait on
another thread's round trip. Every caller gets the batch's outcome: it returns
once its membership is written, or raises what the write raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult

from ...exceptions import LayerUnavailable

__all__ = ["Join", "JoinBatcher"]

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True)
class Join:
    """One ``group_add`` waiting for its batch."""

    group: str
    channel: str
    when: float
    #: Set for a join that waits in a queue (one written by its caller needs none).
    done: AsyncResult | None = field(default=None, compare=False)


class JoinBatcher(Generic[S]):
    """Queues joins per ``(hub, shard)`` and writes each queue in turn.

    Args:
        write: writes one batch (all on one shard) and raises if it could not.
    """

    def __init__(self, write: Callable[[S, list[Join]], None]) -> None:
        self._write = write
        self._queues: dict[tuple[object, S], list[Join]] = {}

    def add(self, shard: S, group: str, channel: str) -> None:
        """Write ``channel``'s membership of ``group`` on ``shard``; return once written.

        Raises:
            Exception: whatever writing its batch raised (``LayerUnavailable``...).
        """
        key = (gevent.get_hub(), shard)
        queue = self._queues.get(key)
        if queue is not None:  # a write is in flight: go in the next batch
            done = AsyncResult()
            queue.append(Join(group, channel, time.time(), done))
            done.get()
            return
        self._queues[key] = []
        try:  # nothing in flight: at once, in this greenlet
            self._write(shard, [Join(group, channel, time.time())])
        finally:
            if self._queues[key]:
                gevent.spawn(self._drain, key, shard)
            else:
                del self._queues[key]

    def _drain(self, key: tuple[object, S], shard: S) -> None:
        # Runs until the queue is empty: what arrives during a write goes in the next.
        batch: list[Join] = []
        try:
            while True:
                batch = self._queues[key]
                if not batch:
                    del self._queues[key]
                    return
                self._queues[key] = []
                try:
                    self._write(shard, batch)
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        except BaseException:
            # Killed (the process is stopping): nobody may wait for a write that won't come.
            stopped = LayerUnavailable("the channel layer stopped while a group_add was queued")
            _settle(batch + self._queues.pop(key, []), stopped)
            raise


def _settle(joins: list[Join], exc: BaseException | None) -> None:
    """Tell each queued join how its batch went (None: written)."""
    for join in joins:
        if join.done is None:
            continue
        if exc is None:
            join.done.set(None)
        else:
            join.done.set_exception(exc)
