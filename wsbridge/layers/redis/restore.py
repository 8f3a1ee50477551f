"""This process's group memberships, kept to put them back after Redis lost them.

A Redis that restarted empty, a failover to a replica that missed the last
writes, a lease that ended while the process stalled: each process re-adds
its own memberships (and applies the discards it could not make during the
outage). :class:`Memberships` holds them and runs the restore, one greenlet
per shard and occasion.

A restore greenlet never dies with a traceback: it stops quietly when the
layer closes under it, stops at the first ``LayerUnavailable`` (the next
recovery runs it again), and any other Redis error is logged as a
rate-limited WARNING and counted (``restore_failed`` in the layer's
counters).
"""

from __future__ import annotations

import logging
import time

import gevent

from ...exceptions import LayerUnavailable
from .layout import Layout, LayoutContext
from .members import LocalMemberships
from .shard import Shard

__all__ = ["Memberships", "WARNING_INTERVAL"]

logger = logging.getLogger("wsbridge.layers.redis")

#: Seconds between two WARNINGs about failed restores.
WARNING_INTERVAL = 10.0

#: Memberships written per round trip by a restore (10,000 take 20, not 10,000:
#: the restore must end well within ``restore_window``).
RESTORE_BATCH = 500


class Memberships:
    """The memberships of this process's channels and the discards still to apply.

    Args:
        layout: writes the memberships.
        ctx: counters (``restore_failed``).
        group_expiry: how long a membership lasts unless renewed.
    """

    def __init__(self, layout: Layout, ctx: LayoutContext, group_expiry: float) -> None:
        self.layout = layout
        self.ctx = ctx
        self.members = LocalMemberships(group_expiry)
        #: ``(group, channel)`` discards that failed during an outage.
        self.pending_discards: set[tuple[str, str]] = set()
        #: Groups a local channel's join was written for: this process receives them.
        self.routed: set[str] = set()
        self.closed = False
        self._greenlets: set[gevent.Greenlet] = set()
        self._last_warning = -WARNING_INTERVAL

    # -- changes -------------------------------------------------------------------

    def join(self, group: str, channel: str, *, local: bool) -> None:
        """Add a membership; a local one is remembered, and kept during an outage.

        Raises:
            LayerUnavailable: Redis is unreachable and the channel is not local.
        """
        if local:
            self.members.add(group, channel)
            self.pending_discards.discard((group, channel))
            if group in self.routed and self.layout.group_add_behind(group, channel):
                return  # its messages come already: the entry is written, not waited for
        try:
            self.layout.group_add(group, channel)
        except LayerUnavailable:
            if not local:
                raise
            logger.debug("group_add(%s, %s) kept for when Redis is back", group, channel)
            return
        if local:
            self.routed.add(group)

    def leave(self, group: str, channel: str, *, local: bool) -> None:
        """Remove a membership; a local one that cannot be removed now is removed later.

        Raises:
            LayerUnavailable: Redis is unreachable and the channel is not local.
        """
        last_local = self.members.discard(group, channel) if local else False
        if last_local:
            self.routed.discard(group)
        try:
            self.layout.group_discard(group, channel, last_local=last_local)
        except LayerUnavailable:
            if not local:
                raise
            self.pending_discards.add((group, channel))

    def drop_channel(self, channel: str) -> None:
        """Leave every group the local ``channel`` joined (``detach``)."""
        for group, last_local in self.members.drop_channel(channel):
            if last_local:
                self.routed.discard(group)
            try:
                self.layout.group_discard(group, channel, last_local=last_local)
            except LayerUnavailable:
                self.pending_discards.add((group, channel))

    def apply(self, op: str, group: str, channel: str, joined_at: float) -> None:
        """Another process changed a membership of one of our channels (``op``: add/discard)."""
        if op == "add":
            self.members.add(group, channel, joined_at)
        elif self.members.discard(group, channel):
            self.routed.discard(group)
            try:
                self.layout.drop_process_from_group(group)
            except LayerUnavailable:
                logger.debug("could not drop this process from %s; it expires", group)

    # -- restores ------------------------------------------------------------------

    def spawn_restore(self, shard: Shard) -> None:
        """Restore the memberships on ``shard`` in a greenlet of its own (not once closed)."""
        if self.closed:
            return
        greenlet = gevent.spawn(self.restore, shard)
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)

    def restore(self, shard: Shard) -> int:
        """Re-add this process's memberships (and apply discards) on ``shard``; how many."""
        try:
            restored = self._restore(shard)
        except LayerUnavailable:
            return 0  # down again: the next recovery restores
        except Exception as exc:
            if self.closed:
                return 0  # the layer closed its connections under us
            self._warn(shard, exc)
            return 0
        if restored:
            logger.info(
                "channel layer: restored %d group membership(s) on %s", restored, shard.name
            )
        return restored

    def _restore(self, shard: Shard) -> int:
        restored = 0
        mine = [(g, c) for g, c in self.members.items() if self.layout.group_shard(g) is shard]
        for start in range(0, len(mine), RESTORE_BATCH):
            if self.closed:
                return restored
            batch = mine[start : start + RESTORE_BATCH]
            self.layout.group_add_many(shard, batch)
            restored += len(batch)
            for group, channel in batch:
                self.members.add(group, channel)  # renewed
        for group, channel in list(self.pending_discards):
            if self.closed:
                return restored
            if self.layout.group_shard(group) is shard:
                self.layout.group_discard(
                    group, channel, last_local=not self.members.members(group)
                )
                self.pending_discards.discard((group, channel))
        return restored

    def _warn(self, shard: Shard, exc: Exception) -> None:
        failed = self.ctx.count("restore_failed")
        now = time.monotonic()
        if now - self._last_warning < WARNING_INTERVAL:
            logger.debug("restoring memberships on %s failed: %r", shard.name, exc)
            return
        self._last_warning = now
        logger.warning(
            "channel layer: restoring group memberships on %s failed (%s: %s); the next "
            "recovery or renewal tries again [%d failed restore(s) so far]",
            shard.name,
            type(exc).__name__,
            exc,
            failed,
        )

    def after_fork(self) -> None:
        self._greenlets = set()  # the parent's, copied: not ours to stop
        self.routed = set()  # what the parent receives: this process is not in it yet

    def close(self) -> None:
        """Stop the restores under way (before the connections close)."""
        self.closed = True
        greenlets = list(self._greenlets)
        self._greenlets.clear()
        gevent.killall(greenlets, block=True, timeout=2)

    def clear(self) -> None:
        self.members.clear()
        self.pending_discards.clear()
        self.routed.clear()
