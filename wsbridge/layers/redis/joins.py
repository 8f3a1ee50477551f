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

:meth:`JoinBatcher.add_behind` queues a join nobody waits for (a local
channel's, where the process already receives the group: see
``Memberships.join``); if its batch cannot be written, the membership is
still the process's own and the next restore or renewal writes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult

from ...exceptions import LayerUnavailable

__all__ = ["Join", "JoinBatcher"]

logger = logging.getLogger("wsbridge.layers.redis")

#: Seconds a flush waits at most for the queued joins (their writes have timeouts too).
FLUSH_TIMEOUT = 10.0

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
        # Who waits (flush) for a (hub, shard)'s queue to be written out.
        self._flushes: dict[tuple[object, S], list[AsyncResult]] = {}

    def flush(self, shard: S, timeout: float = FLUSH_TIMEOUT) -> None:
        """Return once the joins this hub queued on ``shard`` were written (or failed).

        What reads or removes memberships calls it first: a listing shows the
        process's own joins, and a discard is not overtaken by its join.
        """
        key = (gevent.get_hub(), shard)
        if key not in self._queues:
            return
        done = AsyncResult()
        self._flushes.setdefault(key, []).append(done)
        done.wait(timeout)
        if not done.ready():  # a write hung past its own timeouts: go on, but say so
            _warn(f"joins queued on {shard} still unwritten after {timeout:g}s; going on")

    def flush_all(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """:meth:`flush` every shard this hub has joins queued on (before a clean-up)."""
        hub = gevent.get_hub()
        for queued_hub, shard in list(self._queues):
            if queued_hub is hub:
                self.flush(shard, timeout)

    def _idle(self, key: tuple[object, S]) -> None:
        del self._queues[key]
        for done in self._flushes.pop(key, ()):
            done.set(None)

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
                self._idle(key)

    def add_behind(self, shard: S, group: str, channel: str) -> None:
        """Queue ``channel``'s membership of ``group`` on ``shard`` and return at once."""
        key = (gevent.get_hub(), shard)
        join = Join(group, channel, time.time())
        queue = self._queues.get(key)
        if queue is not None:  # in the next batch, written by whoever drains it
            queue.append(join)
            return
        self._queues[key] = [join]
        gevent.spawn(self._drain, key, shard)

    def _drain(self, key: tuple[object, S], shard: S) -> None:
        # Runs until the queue is empty: what arrives during a write goes in the next.
        batch: list[Join] = []
        try:
            while True:
                batch = self._queues[key]
                if not batch:
                    self._idle(key)
                    return
                self._queues[key] = []
                try:
                    self._write(shard, batch)
                except Exception as exc:
                    _settle(batch, exc)
                    _unwritten_behind(batch, exc)
                else:
                    _settle(batch, None)
                batch = []
        except BaseException:
            # Killed (the process is stopping): nobody may wait for a write that won't come.
            stopped = LayerUnavailable("the channel layer stopped while a group_add was queued")
            _settle(batch + self._queues.get(key, []), stopped)
            if key in self._queues:
                self._idle(key)
            raise


#: Seconds between two WARNINGs about queued joins that could not be written.
WARNING_INTERVAL = 10.0
_unwritten = {"count": 0, "warned": -WARNING_INTERVAL}


def _unwritten_behind(joins: list[Join], exc: Exception) -> None:
    # Nobody waits for these: say so (the memberships are kept; a restore writes them).
    behind = sum(1 for join in joins if join.done is None)
    if not behind:
        return
    _warn(
        f"{behind} group membership(s) of this process not written yet "
        f"({type(exc).__name__}: {exc}); kept, the next restore or renewal writes them",
        count=behind,
        quiet=isinstance(exc, LayerUnavailable),
    )


def _warn(text: str, *, count: int = 1, quiet: bool = False) -> None:
    # A WARNING at most once per WARNING_INTERVAL, with the running count (DEBUG between).
    _unwritten["count"] += count
    now = time.monotonic()
    quiet = quiet or now - _unwritten["warned"] < WARNING_INTERVAL
    if not quiet:
        _unwritten["warned"] = now
    (logger.debug if quiet else logger.warning)(
        "channel layer: %s [%d so far]", text, _unwritten["count"]
    )


def _settle(joins: list[Join], exc: BaseException | None) -> None:
    """Tell each queued join how its batch went (None: written)."""
    for join in joins:
        if join.done is None:
            continue
        if exc is None:
            join.done.set(None)
        else:
            join.done.set_exception(exc)
