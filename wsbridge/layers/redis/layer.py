"""``RedisLayer``: the channel layer shared by many processes through Redis.

One process = one ``RedisLayer``. The layer validates names and contents
before any I/O and delegates by responsibility:

* the key layout (a :class:`~.layout.Layout` strategy: ``native.py``,
  ``cluster.py`` or ``interop.py``, chosen once) does everything in Redis;
* :class:`~.delivery.LocalDelivery` keeps the attached (push-delivered)
  channels and the local buffers of channels received with ``receive()``;
* :class:`~.restore.Memberships` keeps this process's groups, for restores;
* :class:`~.reader.Readers` (a greenlet per shard on this process's inbox) and
  :class:`~.reader.Mover` start on need; ``ProcessLeases`` reaps dead processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from re import Pattern
from typing import Any

from ...drops import record_drop
from ...exceptions import ConfigurationError, InvalidChannelName, LayerUnavailable
from ..base import (
    BaseChannelLayer,
    Callback,
    Message,
    validate_channel_name,
    validate_group_name,
    validate_message,
)
from ..history import HistoryMixin, HistoryResult, Position
from ..presence import DEFAULT_INFO_LIMIT, DEFAULT_LEASE, PresenceEntry, PresenceMixin
from ..serializers import get_serializer
from .checkpoints import RedisCheckpoints
from .codec import Codec, Decoded, make_crypter
from .config import decode_hosts, describe
from .delivery import LocalDelivery
from .layout import LayoutContext, check_compat, make_layout
from .presence import RedisPresence
from .reader import Mover, Readers
from .records import Heartbeats, Marks
from .restore import Memberships
from .ring import HashRing
from .shard import Backoff, Shard
from .status import layer_stats

__all__ = ["RedisLayer"]

logger = logging.getLogger("wsbridge.layers.redis")


def _sentinel_host(
    sentinels: Sequence[Any] | None, master_name: str, sentinel_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    return {"sentinels": sentinels, "master_name": master_name, "sentinel_kwargs": sentinel_kwargs}


class RedisLayer(HistoryMixin, PresenceMixin, BaseChannelLayer):
    """Channel layer on one or more Redis instances.

    Args:
        hosts: Redis instances, one per shard: ``redis://``/``rediss://``/
            ``unix://`` URLs, socket paths, ``(host, port)`` pairs or dicts
            of redis-py options (a dict may hold ``sentinels`` and
            ``master_name``). Default: ``["redis://127.0.0.1:6379/0"]``.
        prefix: key prefix (default ``wsbridge``, or ``asgi`` in
            channels_redis mode, as channels_redis).
        expiry, group_expiry, capacity, channel_capacity: as for every layer.
        sentinels, master_name, sentinel_kwargs: Sentinel set-up for a
            single shard, as an alternative to putting them in ``hosts``.
        symmetric_encryption_keys: Fernet keys, newest first: messages are
            encrypted and signed with the first and accepted with any.
        serializer: ``msgpack`` (default) or ``json`` (or one registered in
            :mod:`wsbridge.layers.serializers`). ``serializer_format`` is
            accepted as channels_redis's name for it.
        compat: ``"channels_redis"`` to read and write channels_redis 4.x's
            key layout and message format (share groups with Channels 4).
        max_message_size: largest serialized message, bytes (default 1 MiB).
        process_capacity: items a process inbox holds (all its channels), in
            wsbridge's own format. In channels_redis mode channels_redis's rule
            applies instead: the capacity of the channel sent to (default 100).
        block_timeout: seconds each blocking read waits before looping (at most
            ``lease / 3``: the lease is renewed between reads).
        retry_backoff: ``(base, cap)`` seconds between retries while a shard is down.
        cluster: ``True`` for a Redis Cluster: ``hosts`` then lists seed
            nodes of one cluster (see ``cluster.py`` and docs/topics/scaling.rst).
        lease: seconds a process's lease lasts unrenewed (renewed every third);
            a crashed process's inbox and memberships go ``lease * 1.5`` s later
            (``lease.py``), its long-poll sessions are adopted. 0: no leases
            (state lasts until ``group_expiry``; crashed sessions are lost).
        groups: per group name or glob pattern, ``history`` (messages kept),
            ``history_ttl`` (seconds) and ``presence`` (join/leave events);
            see docs/topics/recovery.rst and docs/topics/presence.rst.
        presence_info_limit: largest presence info, msgpack bytes.
        presence_lease: seconds after which a dead process's presence
            entries are removed (renewed every third of it by live ones).
        restore_window: seconds group sends refuse with ``LayerUnavailable``
            after a Redis restart is noticed, while every process restores
            its memberships (default: ``max(6, cap + 1)``). Make it longer than
            the largest ``retry_backoff`` cap of the processes sharing the Redis.
    """

    #: Adds "shared" (other processes on the same Redis see these groups and channels),
    #: "marks" (claim / put_mark / get_mark) and "handoff" (a long-poll session
    #: moves between processes). Each instance adds its layout's: "presence",
    #: "history" and "at_least_once" with the native layout, and "checkpoints"
    #: (``self.checkpoints``) when it has process leases.
    extensions: tuple[str, ...] = (*BaseChannelLayer.extensions, "shared", "marks", "handoff")

    def __init__(
        self,
        hosts: Sequence[Any] | None = None,
        prefix: str | None = None,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[str | Pattern[str], int] | None = None,
        *,
        sentinels: Sequence[Any] | None = None,
        master_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer: str | None = None,
        serializer_format: str | None = None,
        compat: str | None = None,
        max_message_size: int = 1 << 20,
        process_capacity: int = 10_000,
        block_timeout: float = 2.0,
        retry_backoff: tuple[float, float] = (0.1, 5.0),
        random_prefix_length: int = 12,
        cluster: bool = False,
        lease: float = 10.0,
        groups: Mapping[str, Mapping[str, Any]] | None = None,
        presence_info_limit: int = DEFAULT_INFO_LIMIT,
        presence_lease: float = DEFAULT_LEASE,
        restore_window: float | None = None,
    ) -> None:
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        check_compat(compat, cluster, groups)
        self.compat = compat
        self.prefix = self._check_prefix(
            prefix if prefix is not None else ("asgi" if compat else "wsbridge")
        )
        if master_name is not None:
            if hosts:
                raise ConfigurationError("give either hosts or sentinels/master_name, not both")
            hosts = [_sentinel_host(sentinels, master_name, sentinel_kwargs)]
        self.host_specs = decode_hosts(hosts)
        self.process_capacity = process_capacity
        self.lease = float(lease)
        # The reader renews the lease between blocking reads: a read longer than a third
        # of the lease would let a live, idle process's lease end (and be reaped).
        self.block_timeout = min(block_timeout, self.lease / 3) if self.lease > 0 else block_timeout
        self.codec = Codec(
            get_serializer(serializer or serializer_format or "msgpack"),
            expiry=expiry,
            crypter=make_crypter(symmetric_encryption_keys),
            max_message_size=max_message_size,
        )
        self.cluster = bool(cluster)
        self.shards, self.ring = self._make_shards(Backoff(*retry_backoff))
        self.counters = {"dropped_full": 0, "skipped_full": 0, "bad_items": 0, "delivered": 0}
        self.ctx = self._make_context()
        self.layout = make_layout(self.ctx, compat)
        self.extensions = (*type(self).extensions, *self.layout.extensions)
        self.restore_window = self._restore_window(restore_window, retry_backoff)
        self._init_components()
        self._init_history(groups)
        self._init_presence(presence_info_limit, presence_lease)
        self.history_store = self.layout.history_store()
        self.presence_store = RedisPresence(
            self.ctx,
            self.layout.group_shard,
            self._presence_event,
            self.presence_lease,
            events_on=self._presence_events_on,
        )

    def _make_context(self) -> LayoutContext:
        return LayoutContext(
            prefix=self.prefix,
            shards=self.shards,
            ring=self.ring,
            codec=self.codec,
            expiry=self.expiry,
            group_expiry=self.group_expiry,
            get_capacity=self.get_capacity,
            process_capacity=self.process_capacity,
            lease=self.lease,
            client_prefix=self.client_prefix,
            cluster=self.cluster,
            counters=self.counters,
        )

    def _init_components(self) -> None:
        self.local = LocalDelivery(self.ctx)
        self.memberships = Memberships(self.layout, self.ctx, self.group_expiry)
        self.members = self.memberships.members  # this process's channels' groups
        self.leases = self.layout.process_leases()
        # Long-poll sessions adoptable after a crash need leases: who is dead (checkpoints.py).
        self.checkpoints = None if self.leases is None else RedisCheckpoints(self.leases)
        if self.checkpoints is not None:
            self.extensions = (*self.extensions, "checkpoints")
        self.readers = Readers(
            self.layout,
            self.ctx,
            self.dispatch,
            self._before_read,
            self._maybe_renew,
            self.block_timeout,
        )
        self.mover = Mover(self.layout, self.ctx, self._after_move)
        self.marks = Marks(self.ctx, self.layout.flush_pattern[:-1])
        self.heartbeats = Heartbeats(self.ctx)
        self._closed = False
        self._last_renewal = time.monotonic()

    def _make_shards(self, backoff: Backoff) -> tuple[list[Shard], HashRing]:
        if self.cluster:
            from .cluster import ClusterShard

            shard = ClusterShard(0, self.host_specs, backoff, self._on_recovered)
            return [shard], HashRing([shard.name])
        shards = [
            Shard(i, spec, backoff, self._on_recovered) for i, spec in enumerate(self.host_specs)
        ]
        return shards, HashRing([describe(spec) for spec in self.host_specs])

    def _restore_window(self, window: float | None, retry_backoff: tuple[float, float]) -> float:
        if window is None:
            window = max(6.0, float(retry_backoff[1]) + 1.0)
        for shard in self.shards:
            shard.restore_marker = (self.layout.restore_key, max(1, int(window * 1000)))
        return window

    @staticmethod
    def _check_prefix(prefix: str) -> str:
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "|*?[] \n"):
            raise ConfigurationError(f"prefix {prefix!r} must be a non-empty str without '|*?[] '")
        return prefix

    def __repr__(self) -> str:
        return f"<RedisLayer {[s.name for s in self.shards]} prefix={self.prefix!r}>"

    # -- placement ----------------------------------------------------------------

    def shard_for(self, key: str) -> Shard:
        """The shard owning ``key`` on the consistent-hash ring."""
        return self.ctx.shard_for(key)

    def _is_local(self, channel: str) -> bool:
        return self.ctx.is_local(channel)

    # -- sending ----------------------------------------------------------------------

    def send(self, channel: str, message: Message, *, delay: float | None = None) -> None:
        """Put ``message`` on ``channel`` (see the contract in docs/topics/layers.rst).

        Raises:
            ChannelFull: the channel (or the receiving process's inbox) is full.
            LayerUnavailable: the shard is unreachable; the message was not sent.
            MessageTooLarge: the serialized message exceeds ``max_message_size``.
        """
        validate_channel_name(channel)
        message = validate_message(message)
        self.layout.check_message(message)
        try:
            if delay is not None and delay > 0:
                self._send_later(channel, message, delay)
            else:
                self.layout.send(channel, message)
        except LayerUnavailable:
            record_drop("layer_unavailable", detail=f"send to {channel}")
            raise

    def _send_later(self, channel: str, message: Message, delay: float) -> None:
        due = time.time() + delay
        shard, member = self.layout.delayed_member(channel, message, due)
        shard.call(shard.client.zadd, self.layout.delayed_key, {member: int(due * 1000)})
        self.mover.wake()

    def group_send(self, group: str, message: Message) -> int:
        """Send to every member; returns how many members were skipped as full.

        The message is serialized once; Redis work is one script on the
        group's shard, pushing one item per process that holds members.
        """
        validate_group_name(group)
        message = validate_message(message)
        self.layout.check_message(message)
        options = self.groups_policy(group) if self.groups_policy else None
        try:
            if (
                self.history_store is not None
                and options is not None
                and options.has_history
                and not str(message.get("type", "")).startswith("presence.")
            ):
                skipped = self.history_store.group_send(group, message, options)
            else:
                skipped = self.layout.group_send(group, message)
        except LayerUnavailable:
            record_drop("layer_unavailable", detail=f"group_send to {group}")
            raise
        if skipped:
            self.counters["skipped_full"] += skipped
            record_drop("group_member_full", skipped, detail=f"group {group}")
        return skipped

    # -- receiving ------------------------------------------------------------------------

    def receive(self, channel: str, timeout: float | None = None) -> Message | None:
        """Take the next message for ``channel``; None after ``timeout`` seconds."""
        validate_channel_name(channel)
        if channel in self.local.attached:
            raise InvalidChannelName(f"channel {channel!r} is attached; it cannot be received")
        deadline = None if timeout is None else time.monotonic() + timeout
        if "!" not in channel:
            self.mover.ensure()
            return self.layout.receive(channel, deadline)
        if not self._is_local(channel):
            raise InvalidChannelName(
                f"channel {channel!r} belongs to another process; only the process that "
                "created it with new_channel() can receive from it"
            )
        self._ensure_readers()
        return self.local.receive(channel, deadline)

    def reserve(
        self, channel: str, timeout: float | None = None, visibility: float = 60.0
    ) -> tuple[Message, bytes] | None:
        """At-least-once receive: the next message of a named channel and its receipt.

        Call :meth:`ack` with the receipt when the message is done; unacked,
        it is delivered again (to any process) ``visibility`` seconds later.
        See ``reliable.py``. None after ``timeout`` seconds.

        Raises:
            InvalidChannelName: a process-specific channel (``!``).
            ConfigurationError: in channels_redis compatibility mode.
            LayerUnavailable: the shard is unreachable.
        """
        validate_channel_name(channel)
        if "!" in channel:
            raise InvalidChannelName(f"only named channels can be reserved: {channel!r}")
        if "at_least_once" not in self.layout.extensions:
            raise ConfigurationError("at-least-once channels need the native layout")
        self.mover.ensure()
        return self.layout.reserve(channel, timeout, visibility)

    def ack(self, channel: str, receipt: bytes) -> bool:
        """Finish a reserved message; False if its visibility timeout had passed."""
        return self.layout.ack(channel, receipt)

    def new_channel(self, prefix: str = "specific") -> str:
        name = self._new_channel_name(prefix)
        self.layout.note_prefix(prefix)
        return name

    # -- push delivery ------------------------------------------------------------------

    def attach(self, channel: str, callback: Callback) -> None:
        """Deliver this process's ``channel`` by calling ``callback`` from the reader greenlet."""
        validate_channel_name(channel)
        if not self._is_local(channel):
            raise InvalidChannelName(
                f"only channels made by this layer's new_channel() can be attached: {channel!r}"
            )
        self.local.attach(channel, callback)
        self._ensure_readers()

    def _attached_callback(self, channel: str) -> Callback | None:
        return self.local.attached.get(channel)

    def detach(self, channel: str) -> None:
        """Stop delivery and leave the groups this process joined for ``channel``."""
        self.local.detach(channel)
        self._forget_recovery(channel)
        if channel in self._tracked:
            try:
                self._untrack_channel(channel)
            except LayerUnavailable:
                logger.info("presence of %s not removed now: Redis unreachable", channel)
        self.memberships.drop_channel(channel)

    def dispatch(self, decoded: Decoded) -> None:
        """Hand one decoded item to its local channels (called by the readers)."""
        if decoded.control is not None:
            op, group_name, member, joined_at = decoded.control
            if self._is_local(member):
                self.memberships.apply(op, group_name, member, joined_at)
            return
        channels = decoded.channels or (
            self.members.members(decoded.group) if decoded.group else []
        )
        message, group = decoded.message, decoded.group
        positioned = decoded.position is not None and group is not None
        if positioned:
            message["position"] = decoded.position
            message["group"] = group
            positioned = self._gating
        for channel in channels:
            if positioned and not self._history_gate(channel, group, message):  # type: ignore[arg-type]
                continue
            self.local.deliver(channel, message)

    # -- groups ---------------------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew it).

        For this process's own channels the membership is remembered and
        restored after an outage; during an outage such a ``group_add`` is
        only remembered (it does not raise), others raise ``LayerUnavailable``.
        """
        validate_group_name(group)
        validate_channel_name(channel)
        local = self._is_local(channel)
        holding = local and self._hold_before_join(group, channel)
        try:
            self.memberships.join(group, channel, local=local)
        except BaseException:
            if holding:
                self._release_hold(group, channel)
            raise
        if local:
            self._recover_on_join(group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        if group in self._tracked.get(channel, ()):
            self.presence_untrack(group, channel)
        self._forget_recovery(channel, group)
        self.memberships.leave(group, channel, local=self._is_local(channel))

    def group_channels(self, group: str) -> list[str]:
        validate_group_name(group)
        return self.layout.group_channels(group)

    # -- history and presence (layers/history.py, layers/presence.py) -----------------

    def history(self, group: str, since: Position | str | None = None) -> HistoryResult:
        """The retained history of ``group`` after ``since``: one round trip."""
        validate_group_name(group)
        options = self.groups_policy(group)
        if self.history_store is None or not options.has_history:
            raise ValueError(f"group {group!r} has no history: add it to the layer's groups")
        return self.history_store.read(group, since, options)

    def presence(self, group: str) -> list[PresenceEntry]:
        """Every presence entry of ``group``, across processes: one round trip."""
        validate_group_name(group)
        return self.presence_store.list(group)

    def _is_member_here(self, group: str, channel: str) -> bool:
        return self._is_local(channel) and channel in self.members.members(group)

    def _track(self, group: str, entry: PresenceEntry) -> int:
        if "presence" not in self.layout.extensions:
            raise ConfigurationError("presence needs the native layout (not compat mode)")
        return self.presence_store.track(group, entry)

    def _untrack(self, group: str, channel: str) -> tuple[PresenceEntry, int] | None:
        return self.presence_store.untrack(group, channel)

    def _presence_event(self, group: str, event: dict[str, Any], counter: str) -> None:
        # The event is in the group's outbox (written by the script that made the
        # change): sent, it leaves it; unsent, the lease loop tries again, and if this
        # process dies first its reaper sends it.
        self.presence_counters[counter] += 1
        if not self._presence_events_on(group):
            return
        try:
            self.group_send(group, event)
        except LayerUnavailable:
            self.presence_store.defer(group, event)
            return
        self.presence_store.sent(group, int(event["seq"]))

    # -- background greenlets (reader.py), leases (lease.py), outages (restore.py) ---------

    def _ensure_readers(self) -> None:
        if self._closed:
            return
        self.readers.ensure()
        self.mover.ensure()

    def _after_fork(self) -> None:
        super()._after_fork()
        self.ctx.client_prefix = self.client_prefix
        self.readers.after_fork()
        self.memberships.after_fork()
        self.local.attached.clear()
        if self.leases is not None:
            self.leases.after_fork()
        self._tracked.clear()
        self.presence_store.after_fork()
        for shard in self.shards:
            shard.after_fork()

    def _before_read(self) -> None:
        # A lease that ended while held (a stall, an outage; maybe reaped): restore.
        if self.leases is not None and self.leases.maybe_renew():
            for shard in self.shards:
                self._on_recovered(shard)

    def _after_move(self) -> None:
        if self.leases is not None:
            self.leases.maybe_reap()

    def _maybe_renew(self) -> None:
        # Memberships of long-lived connections would expire after
        # group_expiry; renew them at half-life.
        if time.monotonic() - self._last_renewal > self.group_expiry / 2:
            self._last_renewal = time.monotonic()
            for shard in self.shards:
                self.memberships.spawn_restore(shard)

    def _on_recovered(self, shard: Shard) -> None:
        self.memberships.spawn_restore(shard)

    # -- housekeeping -------------------------------------------------------------------------

    def flush(self) -> None:
        """Delete every key under this layer's prefix on every shard, and local state."""
        for shard in self.shards:
            keys = shard.call(
                lambda s=shard: list(
                    s.client.scan_iter(match=self.layout.flush_pattern, count=1000)
                )
            )
            for start in range(0, len(keys), 1000):
                shard.call(shard.client.unlink, *keys[start : start + 1000])
        self.local.clear()
        self.memberships.clear()
        self._tracked.clear()
        self.presence_store.local.clear()
        self._recovery_requests.clear()
        self._last_seen.clear()

    def close(self) -> None:
        """Stop the background greenlets and close every connection."""
        if not self._closed:  # queued joins land before the clean-up removes them
            self.layout.flush_joins()
        if self.readers and self.leases is not None:
            self.leases.release()
        if not self._closed:
            self.presence_store.close()
        self._closed = True
        self.memberships.close()
        self.readers.close()
        self.mover.close()
        for shard in self.shards:
            shard.close()

    # -- marks and heartbeats (records.py) --------------------------------------------

    def claim(self, key: str, ttl: float) -> bool:
        return self.marks.claim(key, ttl)

    def put_mark(self, key: str, value: float, ttl: float) -> None:
        self.marks.put(key, value, ttl)

    def get_mark(self, key: str) -> float | None:
        return self.marks.get(key)

    def publish_process(self, name: str, info: Mapping[str, Any], ttl: float) -> None:
        """Store the heartbeat for ``ttl`` seconds (``LayerUnavailable`` when its shard is down)."""
        self.heartbeats.publish(name, info, ttl)

    def processes(self) -> list[dict[str, Any]]:
        """Every live process's last heartbeat (those that stopped beating expired)."""
        return self.heartbeats.read()

    def stats(self) -> dict[str, Any]:
        """Per-shard reachability, groups, members per group and queue depths.

        Also ``history`` (recovered / not_recovered / recovery_dropped_full)
        and ``presence`` (joins / leaves / refused, reaped_processes, claimed_events) counters.
        """
        stats = layer_stats(self)
        stats["history"] = dict(self.history_counters)
        stats["presence"] = {
            **self.presence_counters,
            "reaped_processes": self.presence_store.reaped_processes,
            "claimed_events": self.presence_store.claimed_events,
        }
        return stats


#: The name channels_redis users know.
RedisChannelLayer = RedisLayer
