"""The Redis layer's background greenlets: inbox readers and the delayed-message mover.

:class:`Readers` runs one greenlet per shard the layout says this process
must read (:meth:`~.layout.Layout.reader_shards`), blocked on the process's
inbox there; what arrives is handed, decoded, to ``dispatch``. A reader
survives outages (it waits with the shard's backoff, then pings) and never
dies with a traceback. :class:`Mover` moves due delayed messages on every
shard (any process may: the move is atomic in Lua).

Both start on first need and stop on :meth:`close`. They return nothing to
the layer and call only what they were given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from ...drops import record_drop
from ...exceptions import LayerUnavailable
from .codec import Decoded
from .layout import Layout, LayoutContext
from .shard import Shard

__all__ = ["Readers", "Mover", "MOVE_BATCH"]

logger = logging.getLogger("wsbridge.layers.redis")

#: Delayed messages moved per shard and turn.
MOVE_BATCH = 500


class Readers:
    """The inbox reader greenlets of this process.

    Args:
        layout: the key layout (where to read, how to decode).
        ctx: shards and this process's identity.
        dispatch: called with each decoded item, in the reader greenlet.
        before_wait: called before each blocking read (lease renewal).
        after_batch: called after each batch (membership renewal).
        block_timeout: seconds each blocking read waits before looping.
    """

    def __init__(
        self,
        layout: Layout,
        ctx: LayoutContext,
        dispatch: Callable[[Decoded], None],
        before_wait: Callable[[], None],
        after_batch: Callable[[], None],
        block_timeout: float,
    ) -> None:
        self.layout = layout
        self.ctx = ctx
        self.dispatch = dispatch
        self.before_wait = before_wait
        self.after_batch = after_batch
        self.block_timeout = block_timeout
        self.closed = False
        self._greenlets: dict[int, gevent.Greenlet] = {}
        self._generation = 0
        self._last_sweep = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self._greenlets)

    def alive(self) -> int:
        """How many reader greenlets run."""
        return sum(1 for g in self._greenlets.values() if not g.dead)

    def ensure(self) -> None:
        """Start the readers that are not running (none once closed)."""
        if self.closed:
            return
        for shard in self.layout.reader_shards():
            reader = self._greenlets.get(shard.index)
            if reader is None or reader.dead:
                self._greenlets[shard.index] = gevent.spawn(self._read_loop, shard)

    def after_fork(self) -> None:
        # The parent's reader greenlets were copied into this child with the
        # parent's identity: retire them (they exit at their next turn) and
        # start afresh, under a new identity, on first use.
        self._generation += 1
        for greenlet in self._greenlets.values():
            # Now, not at their next turn: one waiting on the parent's socket would
            # otherwise read (and lose) what the parent is sent.
            greenlet.kill(block=False)
        self._greenlets = {}

    def close(self) -> None:
        self.closed = True
        for greenlet in self._greenlets.values():
            greenlet.kill(block=True, timeout=2)
        self._greenlets.clear()

    def _read_loop(self, shard: Shard) -> None:
        """Block on this process's inbox on ``shard``; dispatch what arrives; survive outages."""
        generation = self._generation
        while not self.closed and generation == self._generation:
            if not shard.up:
                gevent.sleep(shard.wait_time())
                if not shard.ping():
                    continue
            self.before_wait()
            try:
                items = self.layout.pop_inbox(shard, self.block_timeout)
            except LayerUnavailable:
                continue
            except Exception:
                if self.closed or generation != self._generation:
                    # Closed, or a parent's reader killed in a forked child (redis-py's
                    # pool, reset there, refuses the copied connection back: queue.Full).
                    return
                logger.exception("channel layer reader on %s failed; going on", shard.name)
                gevent.sleep(shard.backoff.base)
                continue
            for decoded in items:
                if decoded is None:
                    record_drop("expired", detail=f"in this process's inbox on {shard.name}")
                else:
                    self.dispatch(decoded)
            self.after_batch()
            self._maybe_sweep_strays(shard)

    def _maybe_sweep_strays(self, home: Shard) -> None:
        # While hosts lists differ between processes (adding a shard, a
        # rolling restart), a sender may place this process's inbox on
        # another shard: look there too, now and then, without blocking.
        shards = self.ctx.shards
        if len(shards) == 1 or time.monotonic() - self._last_sweep < self.block_timeout:
            return
        self._last_sweep = time.monotonic()
        for shard in shards:
            if shard is home or not shard.up:
                continue
            try:
                items = self.layout.pop_stray(shard)
            except LayerUnavailable:
                continue
            for decoded in items:
                if decoded is not None:
                    self.dispatch(decoded)


class Mover:
    """The greenlet moving due delayed messages to their channels, on every shard.

    Args:
        layout: names the delayed set.
        ctx: the shards and the message expiry.
        after_turn: called after each pass (the lease reaper).
    """

    def __init__(self, layout: Layout, ctx: LayoutContext, after_turn: Callable[[], None]) -> None:
        self.layout = layout
        self.ctx = ctx
        self.after_turn = after_turn
        self.closed = False
        self._greenlet: gevent.Greenlet | None = None
        self._wake = Event()

    def ensure(self) -> None:
        """Start the mover if it is not running (not once closed)."""
        if not self.closed and (self._greenlet is None or self._greenlet.dead):
            self._greenlet = gevent.spawn(self._move_loop)

    def wake(self) -> None:
        """A delayed message was added: look at the due times again now."""
        self.ensure()
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
        self._greenlet = None

    def _move_loop(self) -> None:
        """Move due delayed messages on every shard; any process may do it (atomic in Lua)."""
        while not self.closed:
            next_due = time.time() + 0.5
            for shard in self.ctx.shards:
                due = self._move_on(shard)
                if due is not None:
                    next_due = min(next_due, due)
            self.after_turn()
            self._wake.clear()
            self._wake.wait(max(0.0, min(0.5, next_due - time.time())))

    def _move_on(self, shard: Shard) -> float | None:
        """Move what is due on ``shard``; the next due time there (unix s), if known."""
        if not shard.up and shard.wait_time() > 0:
            return None
        try:
            moved, dropped, due_ms = shard.call(
                shard.move_due,
                keys=[self.layout.delayed_key],
                args=[int(time.time() * 1000), MOVE_BATCH, max(1, int(self.ctx.expiry * 1000))],
            )
        except LayerUnavailable:
            return None
        except Exception:
            if not self.closed:
                logger.exception("channel layer: moving delayed messages on %s failed", shard.name)
            return None
        if dropped:
            record_drop("queue_full", int(dropped), detail="delayed send, destination full")
        if moved >= MOVE_BATCH:
            return time.time()
        if float(due_ms) >= 0:
            return float(due_ms) / 1000
        return None
