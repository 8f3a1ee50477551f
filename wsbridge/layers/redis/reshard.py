"""Adding a shard: move the keys whose owner changes on the new ring.

Consistent hashing means only the groups and named channels that land on
the new shard's points move (about 1/N of them). Process inboxes never move:
every process reads its inbox on every shard it knows.

The documented procedure (docs/topics/scaling.rst)::

    1. start the new Redis;
    2. python -m wsbridge.layers.redis.reshard --from URL1 URL2 --to URL1 URL2 URL3
    3. restart the processes with the new hosts list (rolling is fine);
    4. run step 2 again: it merges what old-config processes wrote meanwhile.

Moving is a merge (ZADD of members, RPUSH of queued items), so running it
twice is harmless. Native layout only (channels_redis places keys by CRC32
modulo the host count: adding a host there moves most keys, as in
channels_redis itself).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .config import decode_hosts, describe, make_pool
from .ring import HashRing

__all__ = ["reshard", "ReshardReport", "main"]


@dataclass
class ReshardReport:
    """What a reshard did: keys looked at, groups and channels moved (by name)."""

    scanned: int = 0
    moved_groups: list[str] = field(default_factory=list)
    moved_channels: list[str] = field(default_factory=list)


def reshard(
    old_hosts: Sequence[Any], new_hosts: Sequence[Any], prefix: str = "wsbridge"
) -> ReshardReport:
    """Move groups and named-channel queues to their owners on the ``new_hosts`` ring.

    Args:
        old_hosts: the ``hosts`` setting processes run with now.
        new_hosts: the ``hosts`` setting with the new shard(s) added.
        prefix: the layer's ``prefix``.
    """
    old_specs, new_specs = decode_hosts(old_hosts), decode_hosts(new_hosts)
    names = [describe(spec) for spec in new_specs]
    ring = HashRing(names)
    clients = {
        describe(s): redis.Redis(connection_pool=make_pool(s)) for s in [*old_specs, *new_specs]
    }
    report = ReshardReport()
    group_prefix, chan_prefix = f"{prefix}:1:group:", f"{prefix}:1:chan:"
    try:
        for spec in old_specs:
            here = describe(spec)
            source = clients[here]
            for raw in list(source.scan_iter(match=f"{prefix}:1:*", count=1000)):
                key = raw.decode("utf-8")
                report.scanned += 1
                if key.startswith(group_prefix):
                    name, ring_key = key[len(group_prefix) :], "g:" + key[len(group_prefix) :]
                elif key.startswith(chan_prefix):
                    name, ring_key = key[len(chan_prefix) :], "c:" + key[len(chan_prefix) :]
                else:
                    continue  # inboxes and the delayed set stay where they are
                owner = names[ring.index(ring_key)]
                if owner == here:
                    continue
                _move(source, clients[owner], key)
                (
                    report.moved_groups if key.startswith(group_prefix) else report.moved_channels
                ).append(name)
    finally:
        for client in clients.values():
            client.close()
    return report


def _move(source: redis.Redis, target: redis.Redis, key: str) -> None:
    kind = source.type(key)
    ttl = source.pttl(key)
    if kind == b"zset":
        members: Any = source.zrange(key, 0, -1, withscores=True)
        if members:
            # Keep the newest time when both sides know a member.
            target.zadd(key, dict(members), gt=True)
            target.zadd(key, dict(members), nx=True)
    elif kind == b"list":
        items = source.lrange(key, 0, -1)
        if items:
            target.rpush(key, *items)
    else:
        return
    if ttl and ttl > 0:
        target.pexpire(key, max(ttl, target.pttl(key) or 0))
    source.delete(key)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsbridge.layers.redis.reshard --from ... --to ... [--prefix P]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="old", nargs="+", required=True, help="current hosts (URLs)")
    parser.add_argument(
        "--to", dest="new", nargs="+", required=True, help="hosts with the new shard"
    )
    parser.add_argument("--prefix", default="wsbridge")
    args = parser.parse_args(argv)
    report = reshard(args.old, args.new, args.prefix)
    print(
        f"scanned {report.scanned} keys; moved {len(report.moved_groups)} groups and "
        f"{len(report.moved_channels)} channel queues"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
