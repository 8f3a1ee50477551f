"""Process leases: the state of a crashed process is cleaned up within a bounded time.

A process killed with -9 leaves its inbox and its group memberships behind;
without leases they last until ``group_expiry`` (a day by default), and every
``group_send`` keeps pushing to the dead inbox. With leases (native layout):

* every process that reads its inbox holds a lease: its name in the sorted
  set ``P:1:leases`` with the time the lease ends (score, ms), renewed every
  ``lease / 3`` seconds by its reader greenlet;
* every membership of a process's channel is also noted (by
  ``group_add``) in the set ``P:1:pgroups:<process>`` (the groups to clean,
  on the process's home shard);
* every process running the delayed-message mover also *reaps*, every
  ``lease / 2`` seconds: a lease that ended is claimed with ``ZREM`` (one
  process wins it) and the dead process's inbox, its ``gproc`` entries and
  its members in those groups are deleted, each reap counted and logged.

So a crashed process's state is gone within ``lease * 1.5`` seconds (plus
one reap pass) of its last renewal. A process that never held a lease
(an older version, a channel name made up by hand) is never reaped.

A live process that finds its own lease ended (a Redis outage or a stall
longer than the lease; another process may have reaped it) logs a WARNING
and restores its memberships, as after a Redis restart.

:class:`LeaseTable` is the lease itself (a sorted set of process -> end of
lease, renewed by each live process); presence keeps its own table of the
same kind (``P:1:plive``, ``presence.py``) with its own duration.
:class:`ProcessLeases` is this module's user of it: renewal, reaping and
release of the inbox and memberships.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...exceptions import LayerUnavailable

if TYPE_CHECKING:
    from .native import NativeLayout
    from .shard import Shard

__all__ = ["LeaseTable", "ProcessLeases", "REAP_BATCH"]

logger = logging.getLogger("wsbridge.layers.redis")

#: Dead processes cleaned up per reap pass.
REAP_BATCH = 50
#: Members of one group looked at per round trip while reaping.
SCAN_COUNT = 500


class LeaseTable:
    """Leases of live processes: one sorted set, process -> end of its lease (unix ms).

    Each live process renews its own entry; any process may list the ones
    that ended and claim one (``ZREM``: exactly one claimer wins).

    Args:
        shard: where the set lives (called on each use: shards can change).
        key: the sorted set's key.
        duration: seconds a lease lasts without renewal.
    """

    def __init__(self, shard: Callable[[], Shard], key: str, duration: float) -> None:
        self._shard = shard
        self.key = key
        self.duration = float(duration)

    @property
    def shard(self) -> Shard:
        return self._shard()

    def deadline_ms(self) -> int:
        """The end of a lease renewed now."""
        return int((time.time() + self.duration) * 1000)

    def renew(self, process: str) -> float | None:
        """Extend ``process``'s lease; returns the end it had (ms), None if it had none.

        Raises:
            LayerUnavailable: the shard is down (the lease is not renewed).
        """
        shard = self.shard
        pipe = shard.client.pipeline(transaction=False)
        pipe.zscore(self.key, process)
        pipe.zadd(self.key, {process: self.deadline_ms()})
        previous, _added = shard.call(pipe.execute)
        return None if previous is None else float(previous)

    def ended(self, limit: int) -> list[str]:
        """Up to ``limit`` processes whose lease has ended."""
        shard = self.shard
        now_ms = int(time.time() * 1000)
        raw: Any = shard.call(shard.client.zrangebyscore, self.key, "-inf", now_ms, 0, limit)
        return [item.decode() for item in raw]

    def claim(self, process: str) -> bool:
        """Remove ``process``'s lease; True for the one caller that removed it."""
        shard = self.shard
        return bool(shard.call(shard.client.zrem, self.key, process))

    def end(self, process: str) -> None:
        """End ``process``'s lease now (if it holds one), for the next reap pass."""
        shard = self.shard
        shard.call(shard.client.zadd, self.key, {process: 0}, xx=True)


class ProcessLeases:
    """This process's lease and the clean-up of dead processes (native layout).

    The layer's reader calls :meth:`maybe_renew` and acts on its answer (a
    lost lease means: restore the memberships); the mover calls
    :meth:`maybe_reap`; ``close()`` calls :meth:`release`.
    """

    def __init__(self, layout: NativeLayout) -> None:
        self.layout = layout
        self.ctx = layout.ctx
        self.table = LeaseTable(
            lambda: self.ctx.shard_for("leases"), layout.leases_key, self.ctx.lease
        )
        self.held = False
        self.last_renewal = 0.0
        self.last_reap = time.monotonic()

    def after_fork(self) -> None:
        """The child's own lease, anew."""
        self.held, self.last_renewal = False, 0.0

    def maybe_renew(self) -> bool:
        """Renew every ``lease / 3`` s; True when the lease had ended (see :meth:`renew`)."""
        if time.monotonic() - self.last_renewal < self.table.duration / 3:
            return False
        self.last_renewal = time.monotonic()
        return self.renew()

    def renew(self) -> bool:
        """Extend this process's lease; True when it had ended while held.

        The caller then restores the memberships. Raises nothing: an outage
        is the shard's to report, the next renewal tries again.
        """
        now_ms = int(time.time() * 1000)
        try:
            previous = self.table.renew(self.ctx.client_prefix)
        except LayerUnavailable:
            return False
        held, self.held = self.held, True
        # Our entry gone (reaped: ZREM) or out of date while we held a lease.
        if not held or (previous is not None and previous >= now_ms):
            return False
        lost = self.ctx.count("lease_lost")
        logger.warning(
            "channel layer: this process's lease had ended (a stall, or Redis unreachable, "
            "longer than %.1fs; it may have been reaped); restoring its group memberships "
            "[%d so far]",
            self.table.duration,
            lost,
        )
        return True

    def release(self) -> None:
        """On close: remove what this process leaves behind, and its lease.

        If Redis cannot be reached the lease is left to end by itself (the
        others reap what is left); if the clean-up fails half-way the lease is
        ended at once so that the next reap pass finishes it.
        """
        me = self.ctx.client_prefix
        try:
            self._clean_process(me)
            self.table.claim(me)
        except LayerUnavailable:
            try:
                self.table.end(me)
            except LayerUnavailable:
                logger.debug("could not release the lease; it ends by itself")

    def maybe_reap(self) -> None:
        """Reap every ``lease / 2`` s; a failure is logged and tried again next time."""
        if time.monotonic() - self.last_reap < self.table.duration / 2:
            return
        self.last_reap = time.monotonic()
        try:
            self.reap()
        except Exception:
            logger.exception("channel layer: reaping dead processes failed; going on")

    def reap(self) -> int:
        """Clean up processes whose lease ended; returns how many were reaped."""
        try:
            dead = self.table.ended(REAP_BATCH)
        except LayerUnavailable:
            return 0
        reaped = 0
        for process in dead:
            if process == self.ctx.client_prefix:
                continue  # our own lease: renew() deals with it
            try:
                if not self.table.claim(process):
                    continue  # another process is reaping it
                groups, members = self._clean_process(process)
            except LayerUnavailable:
                continue  # its lease entry may be gone: its keys expire by themselves
            reaped += 1
            logger.warning(
                "channel layer: process %s stopped renewing its lease; removed its inbox and "
                "%d membership(s) in %d group(s) [%d process(es) reaped so far]",
                process,
                members,
                groups,
                self.ctx.count("reaped_processes"),
            )
        return reaped

    def _clean_process(self, process: str) -> tuple[int, int]:
        layout = self.layout
        home = layout.home_shard(process)
        pgroups = layout.pgroups_key(process)
        raw: Any = home.call(home.client.smembers, pgroups)
        groups = [g.decode() for g in raw]
        members = 0
        marker = f".{process}!"
        for group in groups:
            shard = layout.group_shard(group)
            key = layout.group_key(group)
            gone = [
                m
                for m, _ in shard.call(
                    lambda s=shard, k=key: list(
                        s.client.zscan_iter(k, match=f"*{marker}*", count=SCAN_COUNT)
                    )
                )
            ]
            pipe = shard.client.pipeline(transaction=False)
            pipe.zrem(layout.gproc_key(group), process)
            if gone:
                pipe.zrem(key, *gone)
            shard.call(pipe.execute)
            members += len(gone)
        home.call(home.client.unlink, pgroups, layout.proc_key(process))
        return len(groups), members
