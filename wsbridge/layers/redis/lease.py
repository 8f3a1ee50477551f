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
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ...exceptions import LayerUnavailable

if TYPE_CHECKING:
    from .layer import RedisLayer
    from .shard import Shard

__all__ = ["renew", "reap", "release", "REAP_BATCH"]

logger = logging.getLogger("wsbridge.layers.redis")

#: Dead processes cleaned up per reap pass.
REAP_BATCH = 50
#: Members of one group looked at per round trip while reaping.
SCAN_COUNT = 500


def _enabled(layer: RedisLayer) -> bool:
    return not layer.compat and layer.lease > 0


def _leases_shard(layer: RedisLayer) -> Shard:
    return layer.shard_for("leases")


def renew(layer: RedisLayer) -> None:
    """Extend this process's lease; restore its state if the lease had ended.

    Called by the reader greenlet; raises nothing (an outage is the shard's
    to report, the next renewal tries again).
    """
    if not _enabled(layer):
        return
    shard = _leases_shard(layer)
    key, me = layer.layout.leases_key, layer.client_prefix
    now_ms = int(time.time() * 1000)
    try:
        previous = shard.call(shard.client.zscore, key, me)
        shard.call(shard.client.zadd, key, {me: now_ms + int(layer.lease * 1000)})
    except LayerUnavailable:
        return
    held, layer._lease_held = layer._lease_held, True
    # Our entry gone (reaped: ZREM) or out of date while we held a lease.
    if held and (previous is None or previous < now_ms):
        layer.counters["lease_lost"] = layer.counters.get("lease_lost", 0) + 1
        logger.warning(
            "channel layer: this process's lease had ended (a stall, or Redis unreachable, "
            "longer than %.1fs; it may have been reaped); restoring its group memberships "
            "[%d so far]",
            layer.lease,
            layer.counters["lease_lost"],
        )
        for target in layer.shards:
            layer._on_recovered(target)


def release(layer: RedisLayer) -> None:
    """On close: remove what this process leaves behind, and its lease.

    If Redis cannot be reached the lease is left to end by itself (the
    others reap what is left); if the clean-up fails half-way the lease is
    ended at once so that the next reap pass finishes it.
    """
    if not _enabled(layer):
        return
    shard = _leases_shard(layer)
    key, me = layer.layout.leases_key, layer.client_prefix
    try:
        _clean_process(layer, me)
        shard.call(shard.client.zrem, key, me)
    except LayerUnavailable:
        try:
            shard.call(shard.client.zadd, key, {me: 0}, xx=True)
        except LayerUnavailable:
            logger.debug("could not release the lease; it ends by itself")


def reap(layer: RedisLayer) -> int:
    """Clean up processes whose lease ended; returns how many were reaped."""
    if not _enabled(layer):
        return 0
    shard = _leases_shard(layer)
    key = layer.layout.leases_key
    now_ms = int(time.time() * 1000)
    try:
        dead: Any = shard.call(shard.client.zrangebyscore, key, "-inf", now_ms, 0, REAP_BATCH)
    except LayerUnavailable:
        return 0
    reaped = 0
    for raw in dead:
        process = raw.decode()
        if process == layer.client_prefix:
            continue  # our own lease: renew() deals with it
        try:
            if not shard.call(shard.client.zrem, key, raw):
                continue  # another process is reaping it
            groups, members = _clean_process(layer, process)
        except LayerUnavailable:
            continue  # its lease entry may be gone: its keys expire by themselves
        reaped += 1
        layer.counters["reaped_processes"] = layer.counters.get("reaped_processes", 0) + 1
        logger.warning(
            "channel layer: process %s stopped renewing its lease; removed its inbox and "
            "%d membership(s) in %d group(s) [%d process(es) reaped so far]",
            process,
            members,
            groups,
            layer.counters["reaped_processes"],
        )
    return reaped


def _clean_process(layer: RedisLayer, process: str) -> tuple[int, int]:
    layout = layer.layout
    home = layout.home_shard(process)
    pgroups = layout.pgroups_key(process)
    groups = [g.decode() for g in home.call(home.client.smembers, pgroups)]
    members = 0
    marker = f".{process}!"
    for group in groups:
        shard = layout.group_shard(group)
        gone = [
            m
            for m, _ in shard.call(
                lambda s=shard, g=group: list(
                    s.client.zscan_iter(layout.group_key(g), match=f"*{marker}*", count=SCAN_COUNT)
                )
            )
        ]
        pipe = shard.client.pipeline(transaction=False)
        pipe.zrem(layout.gproc_key(group), process)
        if gone:
            pipe.zrem(layout.group_key(group), *gone)
        shard.call(pipe.execute)
        members += len(gone)
    home.call(home.client.unlink, pgroups, layout.proc_key(process))
    return len(groups), members
