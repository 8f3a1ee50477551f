"""The native key layout (format version 1) and the Redis work for each call.

Keys, all under the configured prefix ``P`` (default ``wsbridge``)::

    P:1:group:<group>     ZSET  member channel -> unix time it was (re)added
    P:1:gproc:<group>     ZSET  process holding members -> last join time
    P:1:gplain:<group>    ZSET  plain named channels in the group -> time
    P:1:chan:<channel>    LIST  items for a named channel (``thumbnails``)
    P:1:proc:<process>    LIST  items for every process-specific channel of
                                one process (``specific.<process>!<id>``);
                                one per process on every shard
    P:1:delayed           ZSET  delayed items, score = due time in ms
    P:1:leases            ZSET  process -> end of its lease, ms (``lease.py``)
    P:1:pgroups:<process> SET   groups the process's channels joined

The group key lives on the shard ``ring.index("g:" + group)``, a named
channel on ``ring.index("c:" + channel)``; a direct message to a
process-specific channel goes to that process's inbox on the shard
``ring.index("c:" + channel)`` and a group message to the inboxes on the
group's shard, which is why each process reads its inbox on every shard.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import gevent

from ...drops import record_drop
from ...exceptions import ChannelFull, LayerUnavailable, MessageDecodeError
from ..base import Message
from . import reliable
from .codec import Decoded
from .joins import Join, JoinBatcher
from .layout import LayoutContext, decode_items
from .shard import raise_restoring

if TYPE_CHECKING:
    from .history import RedisHistory
    from .lease import ProcessLeases
    from .shard import Shard

__all__ = ["NativeLayout", "process_of"]

#: Items fetched from an inbox per round trip once one has arrived.
BATCH = 256


def process_of(channel: str) -> str:
    """The process part of ``specific.<process>!<id>`` (what Lua computes too)."""
    return channel[: channel.index("!")].rpartition(".")[2]


class NativeLayout:
    """Keys and scripts of the wsbridge format, version 1."""

    name = "wsbridge/1"
    extensions: tuple[str, ...] = ("presence", "history", "at_least_once")

    def __init__(self, ctx: LayoutContext) -> None:
        self.ctx = ctx
        self.codec = ctx.codec
        base = f"{ctx.prefix}:1:"
        self.group_prefix = base + "group:"
        self.gproc_prefix = base + "gproc:"
        self.gplain_prefix = base + "gplain:"
        self.chan_prefix = base + "chan:"
        self.proc_prefix = base + "proc:"
        self.delayed_key = base + "delayed"
        self.leases_key = base + "leases"
        self.pgroups_prefix = base + "pgroups:"
        self.restore_key = base + "restoring"
        self.flush_pattern = base + "*"
        self.joins: JoinBatcher[Shard] = JoinBatcher(self._write_joins)

    # -- key names ---------------------------------------------------------------
    # One place builds every key from a name, so a layout for Redis Cluster
    # (``cluster.py``) can wrap names in hash tags: a group's keys share a slot.

    def tag(self, name: str) -> str:
        """The name as it appears in a key (a Redis Cluster layout adds a hash tag)."""
        return name

    def untag(self, name: str) -> str:
        """The inverse of :meth:`tag`, for listing keys in ``stats()``."""
        return name

    def group_key(self, group: str) -> str:
        return self.group_prefix + self.tag(group)

    def gproc_key(self, group: str) -> str:
        return self.gproc_prefix + self.tag(group)

    def gplain_key(self, group: str) -> str:
        return self.gplain_prefix + self.tag(group)

    def proc_key(self, process: str) -> str:
        return self.proc_prefix + self.tag(process)

    def restore_key_for(self, group: str) -> str:
        """The restore marker the group script checks (one per Redis; see ``shard.py``)."""
        return self.restore_key

    def pgroups_key(self, process: str) -> str:
        """The groups a process's channels joined (for the lease reaper, ``lease.py``)."""
        return self.pgroups_prefix + self.tag(process)

    # -- placement -------------------------------------------------------------

    def group_shard(self, group: str) -> Shard:
        return self.ctx.shard_for("g:" + group)

    def channel_shard(self, channel: str) -> Shard:
        if "!" in channel:
            return self.home_shard(process_of(channel))
        return self.ctx.shard_for("c:" + channel)

    def home_shard(self, process: str) -> Shard:
        """Where a process's inbox lives: all its messages, so they stay in order."""
        return self.ctx.shard_for("p:" + process)

    def reader_shards(self) -> list[Shard]:
        return [self.home_shard(self.ctx.client_prefix)]

    def channel_key(self, channel: str) -> str:
        if "!" in channel:
            return self.proc_key(process_of(channel))
        return self.chan_prefix + self.tag(channel)

    def is_queue(self, key: str) -> bool:
        return key.startswith((self.chan_prefix, self.proc_prefix))

    def queue_label(self, key: str) -> str:
        """A readable name for a queue key in ``stats()``."""
        if key.startswith(self.proc_prefix):
            return "process " + self.untag(key[len(self.proc_prefix) :])
        if key.startswith(self.chan_prefix):
            return self.untag(key[len(self.chan_prefix) :])
        return key

    def inbox_keys(self) -> list[str]:
        return [self.proc_key(self.ctx.client_prefix)]

    # -- sending -------------------------------------------------------------------

    def check_message(self, message: Message) -> None:
        """Every validated message fits this format (its size is checked when encoded)."""

    def note_prefix(self, prefix: str) -> None:
        """One inbox per process holds every prefix: nothing to note."""

    def send(self, channel: str, message: Message) -> None:
        self.send_data(channel, self.codec.dump_message(message))

    def send_data(self, channel: str, data: bytes) -> None:
        """Send an already serialized message (a group send serializes once)."""
        shard = self.channel_shard(channel)
        item = self.codec.direct_item(channel, data)
        capacity = self.capacity_of_key(channel)
        pushed = shard.call(
            shard.push_list,
            keys=[self.channel_key(channel)],
            args=[item, capacity, int(time.time() * 1000), self.expiry_ms],
        )
        if not pushed:
            raise ChannelFull(f"channel {channel!r} is at its capacity ({capacity})")

    def capacity_of_key(self, channel: str) -> int:
        # A process inbox holds every channel of the process: its own limit.
        return self.ctx.process_capacity if "!" in channel else self.ctx.get_capacity(channel)

    @property
    def expiry_ms(self) -> int:
        return max(1, int(self.ctx.expiry * 1000))

    def group_send(self, group: str, message: Message) -> int:
        data = self.codec.dump_message(message)
        shard = self.group_shard(group)
        item = self.codec.group_item(group, data)
        one_shard = len(self.ctx.shards) == 1
        full, _reached, plain, processes = shard.call(
            shard.group_send_native,
            keys=[
                self.gproc_key(group),
                self.gplain_key(group),
                self.group_key(group),
                self.restore_key_for(group),
            ],
            args=[
                self.ctx.group_min_score(),
                self.proc_prefix,
                item,
                self.ctx.process_capacity,
                self.expiry_ms,
                "1" if one_shard else "0",
            ],
        )
        if int(full) < 0:
            raise_restoring(shard)
        skipped = int(full)
        if processes:
            skipped += self.push_to_homes([p.decode() for p in processes], item)
        for member in plain:
            try:
                self.send_data(member.decode("utf-8"), data)
            except ChannelFull:
                skipped += 1
        return skipped

    def push_to_homes(self, processes: list[str], item: bytes) -> int:
        """Push the group item to each process's home shard (one pipeline per shard)."""
        by_shard: dict[int, list[str]] = {}
        for process in processes:
            by_shard.setdefault(self.home_shard(process).index, []).append(process)
        full = 0
        now_ms = int(time.time() * 1000)
        for index, batch in by_shard.items():
            shard = self.ctx.shards[index]
            pipe = shard.client.pipeline(transaction=False)
            for process in batch:
                shard.push_list(
                    keys=[self.proc_key(process)],
                    args=[item, self.ctx.process_capacity, now_ms, self.expiry_ms],
                    client=pipe,
                )
            try:
                results = shard.call(pipe.execute)
            except LayerUnavailable:  # not "full": its shard is down (counted and said so)
                record_drop("layer_unavailable", len(batch), detail="a group item to inboxes")
                continue
            full += sum(1 for ok in results if not ok)
        return full

    def delayed_member(self, channel: str, message: Message, due: float) -> tuple[Shard, bytes]:
        """The delayed-zset entry for ``channel`` (on the shard of its destination list)."""
        data = self.codec.dump_message(message)
        shard = self.channel_shard(channel)
        item = self.codec.direct_item(channel, data, expires_at=due + self.ctx.expiry)
        key = self.channel_key(channel)
        head = b"%s|l|%d|%s|" % (
            os.urandom(8).hex().encode(),
            self.capacity_of_key(channel),
            key.encode(),
        )
        return shard, head + item

    # -- groups ----------------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        # Concurrent joins share round trips (joins.py); _write_joins does the work.
        self.joins.add(self.group_shard(group), group, channel)

    def group_add_behind(self, group: str, channel: str) -> bool:
        # A group's messages reach this process by its entry in the group's
        # process set, then its local members: a new local member's own entry
        # (for listings, the reaper, interop) need not be waited for.
        self.joins.add_behind(self.group_shard(group), group, channel)
        return True

    def flush_joins(self) -> None:
        self.joins.flush_all()

    def group_add_many(self, shard: Shard, members: list[tuple[str, str]]) -> None:
        now = time.time()
        self._write_joins(shard, [Join(group, channel, now) for group, channel in members])

    def _write_joins(self, shard: Shard, joins: list[Join]) -> None:
        ttl = max(1, int(self.ctx.group_expiry) + 1)
        pipe = shard.client.pipeline(transaction=False)
        homes: dict[Shard, Any] = {}  # the reaper's pgroups sets on other shards
        by_group: dict[str, list[Join]] = {}
        for join in joins:
            by_group.setdefault(join.group, []).append(join)
        for group, members in by_group.items():
            processes = {process_of(j.channel): j.when for j in members if "!" in j.channel}
            plain = {j.channel: j.when for j in members if "!" not in j.channel}
            sides = ((self.gproc_key(group), processes), (self.gplain_key(group), plain))
            for key, entries in (
                (self.group_key(group), {j.channel: j.when for j in members}),
                *sides,
            ):
                if entries:
                    pipe.zadd(key, entries)
                    pipe.expire(key, ttl)
            if self.ctx.lease <= 0:
                continue
            for process in processes:  # for the reaper: the groups to clean if it dies
                home = self.home_shard(process)
                if home is not shard and home not in homes:
                    homes[home] = home.client.pipeline(transaction=False)
                target = pipe if home is shard else homes[home]
                target.sadd(self.pgroups_key(process), group)
                target.expire(self.pgroups_key(process), ttl)
        for home, home_pipe in homes.items():
            home.call(home_pipe.execute)
        shard.call(pipe.execute)
        for join in joins:
            if "!" in join.channel and not self.ctx.is_local(join.channel):
                self._announce("add", join.group, join.channel, join.when)

    def group_discard(self, group: str, channel: str, *, last_local: bool = False) -> None:
        """Remove a member; ``last_local``: this process holds no other member of the group."""
        shard = self.group_shard(group)
        self.joins.flush(shard)  # a join queued before it is written before it
        pipe = shard.client.pipeline(transaction=False)
        pipe.zrem(self.group_key(group), channel)
        if "!" not in channel:
            pipe.zrem(self.gplain_key(group), channel)
        elif last_local:
            pipe.zrem(self.gproc_key(group), process_of(channel))
        shard.call(pipe.execute)
        if "!" in channel and not self.ctx.is_local(channel):
            self._announce("discard", group, channel, time.time())

    def _announce(self, op: str, group: str, channel: str, when: float) -> None:
        # The owning process keeps the table that turns group items into
        # deliveries; tell it (through its inbox, in order with its messages).
        shard = self.channel_shard(channel)
        shard.call(
            shard.push_list,
            keys=[self.channel_key(channel)],
            args=[
                self.codec.membership_item(op, group, channel, when),
                self.ctx.process_capacity,
                int(when * 1000),
                self.expiry_ms,
            ],
        )

    def drop_process_from_group(self, group: str) -> None:
        """This process holds no member of ``group`` any more: stop sending it the group."""
        shard = self.group_shard(group)
        self.joins.flush(shard)
        shard.call(shard.client.zrem, self.gproc_key(group), self.ctx.client_prefix)

    def group_channels(self, group: str) -> list[str]:
        shard = self.group_shard(group)
        self.joins.flush(shard)  # this process's own joins are listed
        return group_members(self.ctx, shard, self.group_key(group))

    # -- reading -----------------------------------------------------------------------

    def pop_inbox(self, shard: Shard, timeout: float) -> list[Decoded | None]:
        """Wait up to ``timeout`` for this process's inbox on ``shard``; return a batch."""
        key = self.inbox_keys()[0]
        first = shard.call(shard.blocking.blpop, [key], timeout)
        if first is None:
            return []
        rest = shard.call(shard.client.lpop, key, BATCH) or []
        return decode_items(self.ctx, f"{shard.name} inbox", [first[1], *rest], self.decode)

    def pop_stray(self, shard: Shard) -> list[Decoded | None]:
        """Items for this process that a sender with another hosts list put on ``shard``."""
        items: Any = shard.call(shard.client.lpop, self.inbox_keys()[0], BATCH)
        return decode_items(self.ctx, f"{shard.name} inbox", list(items or []), self.decode)

    def decode(self, raw: bytes) -> Decoded | None:
        return self.codec.decode_item(raw)

    def receive(self, channel: str, deadline: float | None) -> Message | None:
        """Blocking receive on a named channel's list until ``deadline`` (monotonic)."""
        shard = self.channel_shard(channel)
        key = self.channel_key(channel)
        result: Any
        while True:
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                # One last non-blocking look: timeout=0 still takes what is there.
                popped = shard.call(shard.client.lpop, key)
                result = None if popped is None else (key, popped)
            else:
                result = shard.call(shard.blocking.blpop, [key], max(0.01, min(remaining, 5.0)))
            if result is not None:
                try:
                    decoded = self.codec.decode_item(result[1])
                except MessageDecodeError as exc:
                    self.ctx.count_bad_item(key, exc)
                    continue
                if decoded is not None:
                    return decoded.message
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return None
            gevent.sleep(0)

    def reserve(
        self, channel: str, timeout: float | None, visibility: float
    ) -> tuple[Message, bytes] | None:
        return reliable.reserve(self, channel, timeout, visibility)

    def ack(self, channel: str, receipt: bytes) -> bool:
        return reliable.ack(self, channel, receipt)

    # -- capabilities ------------------------------------------------------------------

    def history_store(self) -> RedisHistory | None:
        from .history import RedisHistory

        return RedisHistory(self)

    def process_leases(self) -> ProcessLeases | None:
        from .lease import ProcessLeases

        return ProcessLeases(self) if self.ctx.lease > 0 else None


def group_members(ctx: LayoutContext, shard: Shard, key: str) -> list[str]:
    """The unexpired members of the group ZSET ``key`` (both layouts keep groups so)."""
    members = shard.call(shard.group_members, keys=[key], args=[ctx.group_min_score()])
    return [m.decode("utf-8") for m in members]
