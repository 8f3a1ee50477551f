"""``RedisLayer``: the channel layer shared by many processes through Redis.

One process = one ``RedisLayer``. It keeps, in this process:

* the attached (push-delivered) channels and their callbacks;
* small local buffers for this process's specific channels that are
  received with ``receive()`` instead of attached;
* the groups its own channels joined, to restore them after an outage;
* one reader greenlet per shard, blocked on this process's inbox, and one
  mover greenlet for delayed messages; both start on first need.

Everything else lives in Redis (see ``native.py`` and ``interop.py`` for the
two key layouts). Names and contents are validated before any I/O.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from re import Pattern
from typing import Any

import gevent
import msgpack
from gevent.event import Event

from ...drops import record_drop
from ...exceptions import (
    ChannelFull,
    ConfigurationError,
    InvalidChannelName,
    LayerUnavailable,
    MessageDecodeError,
)
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
from . import lease as leases
from . import reliable
from .codec import Codec, Decoded, make_crypter
from .config import decode_hosts, describe
from .members import LocalMemberships
from .ring import HashRing
from .shard import Backoff, Shard
from .status import layer_stats

__all__ = ["RedisLayer"]

logger = logging.getLogger("wsbridge.layers.redis")

COMPAT_MODES = ("channels_redis",)


class _Buffer:
    """Messages for one of this process's channels that nobody attached."""

    __slots__ = ("items", "event")

    def __init__(self) -> None:
        self.items: deque[tuple[float, Message]] = deque()
        self.event = Event()


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
        block_timeout: seconds each blocking read waits before looping.
        retry_backoff: ``(base, cap)`` seconds between retries while a shard is down.
        cluster: ``True`` for a Redis Cluster: ``hosts`` then lists seed
            nodes of one cluster (see ``cluster.py`` and docs/topics/scaling.rst).
        lease: seconds a process's lease lasts without renewal; the inbox
            and memberships of a process that stopped renewing (crashed) are
            removed about ``lease * 1.5`` s later (``lease.py``). 0 turns
            leases off (state then lasts until ``group_expiry``).
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

    #: Adds "shared" (other processes on the same Redis see these groups and channels)
    #: and "marks" (claim / put_mark / get_mark).
    extensions = (*BaseChannelLayer.extensions, "shared", "marks")

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
        lease: float = 30.0,
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
        if compat is not None and compat not in COMPAT_MODES:
            raise ConfigurationError(
                f"unknown compat mode {compat!r}; known: {', '.join(COMPAT_MODES)}"
            )
        self.compat = compat
        self.prefix = self._check_prefix(
            prefix if prefix is not None else ("asgi" if compat else "wsbridge")
        )
        if master_name is not None:
            if hosts:
                raise ConfigurationError("give either hosts or sentinels/master_name, not both")
            hosts = [
                {
                    "sentinels": sentinels,
                    "master_name": master_name,
                    "sentinel_kwargs": sentinel_kwargs,
                }
            ]
        self.host_specs = decode_hosts(hosts)
        self.process_capacity = process_capacity
        self.lease = float(lease)
        self._last_lease = 0.0
        self._lease_held = False
        self._last_reap = time.monotonic()
        self.block_timeout = block_timeout
        self.codec = Codec(
            get_serializer(serializer or serializer_format or "msgpack"),
            expiry=expiry,
            crypter=make_crypter(symmetric_encryption_keys),
            max_message_size=max_message_size,
        )
        backoff = Backoff(*retry_backoff)
        self.cluster = bool(cluster)
        if self.cluster:
            self._init_cluster(backoff)
        else:
            self.shards = [
                Shard(i, spec, backoff, self._on_recovered)
                for i, spec in enumerate(self.host_specs)
            ]
            self.ring = HashRing([describe(spec) for spec in self.host_specs])
        if self.cluster:
            from .cluster import ClusterLayout

            self.layout: Any = ClusterLayout(self)
        elif compat:
            from .interop import ChannelsRedisLayout

            self.layout = ChannelsRedisLayout(self)
        else:
            from .native import NativeLayout

            self.layout = NativeLayout(self)
        if restore_window is None:
            restore_window = max(6.0, float(retry_backoff[1]) + 1.0)
        self.restore_window = restore_window
        for shard in self.shards:
            shard.restore_marker = (self.layout.restore_key, max(1, int(restore_window * 1000)))
        self._attached: dict[str, Callback] = {}
        self._buffers: dict[str, _Buffer] = {}
        self.members = LocalMemberships(group_expiry)
        self._pending_discards: set[tuple[str, str]] = set()
        self._readers: dict[int, gevent.Greenlet] = {}
        self._generation = 0
        self._mover: gevent.Greenlet | None = None
        self._mover_wake = Event()
        self._closed = False
        self._last_renewal = time.monotonic()
        self._last_sweep = time.monotonic()
        self.counters = {"dropped_full": 0, "skipped_full": 0, "bad_items": 0, "delivered": 0}
        if compat and groups:
            raise ConfigurationError(
                "history and presence (groups=...) need the native layout; "
                "they are not available with compat='channels_redis'"
            )
        self._init_history(groups)
        self._init_presence(presence_info_limit, presence_lease)
        from .history import RedisHistory
        from .presence import RedisPresence

        self.history_store = RedisHistory(self)
        self.presence_store = RedisPresence(self)
        if not compat:
            self.extensions = (*type(self).extensions, "presence", "history")
        if not compat:
            # reserve()/ack(): the worker's at-least-once channels (reliable.py).
            self.extensions = (*self.extensions, "at_least_once")

    def _init_cluster(self, backoff: Backoff) -> None:
        from .cluster import ClusterShard

        if self.compat:
            raise ConfigurationError(
                "compat='channels_redis' cannot run on a Redis Cluster: channels_redis's keys "
                "have no hash tags, so its scripts span slots; use the native layout"
            )
        self.shards = [ClusterShard(0, self.host_specs, backoff, self._on_recovered)]
        self.ring = HashRing([self.shards[0].name])

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
        return self.shards[self.ring.index(key)]

    def group_min_score(self) -> float:
        return time.time() - self.group_expiry

    def _is_local(self, channel: str) -> bool:
        return "!" in channel and channel[: channel.index("!")].endswith("." + self.client_prefix)

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
        if self.compat:
            self.layout.check_message(message)
            data = b""
        else:
            data = self.codec.dump_message(message)
        try:
            if delay is not None and delay > 0:
                self._send_later(channel, message, data, delay)
            elif self.compat:
                self.layout.send(channel, message)
            else:
                self.layout.send(channel, data)
        except LayerUnavailable:
            record_drop("layer_unavailable", detail=f"send to {channel}")
            raise

    def _send_later(self, channel: str, message: Message, data: bytes, delay: float) -> None:
        due = time.time() + delay
        if self.compat:
            shard, member = self.layout.delayed_member(channel, message, due)
        else:
            shard, member = self.layout.delayed_member(channel, data, due)
        shard.call(shard.client.zadd, self.layout.delayed_key, {member: int(due * 1000)})
        self._ensure_mover()
        self._mover_wake.set()

    def group_send(self, group: str, message: Message) -> int:
        """Send to every member; returns how many members were skipped as full.

        The message is serialized once; Redis work is one script on the
        group's shard, pushing one item per process that holds members.
        """
        validate_group_name(group)
        message = validate_message(message)
        options = self.groups_policy(group) if self.groups_policy else None
        if self.compat:
            self.layout.check_message(message)
        try:
            if self.compat:
                skipped = self.layout.group_send(group, message)
            elif (
                options is not None
                and options.has_history
                and not str(message.get("type", "")).startswith("presence.")
            ):
                skipped = self.history_store.group_send(group, message, options)
            else:
                skipped = self.layout.group_send(group, self.codec.dump_message(message))
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
        if channel in self._attached:
            raise InvalidChannelName(f"channel {channel!r} is attached; it cannot be received")
        deadline = None if timeout is None else time.monotonic() + timeout
        if "!" not in channel:
            self._ensure_mover()
            return self.layout.receive(channel, deadline)  # type: ignore[no-any-return]
        if not self._is_local(channel):
            raise InvalidChannelName(
                f"channel {channel!r} belongs to another process; only the process that "
                "created it with new_channel() can receive from it"
            )
        self._ensure_readers()
        buffer = self._buffers.get(channel)
        if buffer is None:
            buffer = self._buffers[channel] = _Buffer()
        while True:
            self._expire_buffer(channel, buffer, time.time())
            if buffer.items:
                return buffer.items.popleft()[1]
            buffer.event.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            buffer.event.wait(remaining)
            if self._buffers.get(channel) is not buffer:  # flushed meanwhile
                buffer = self._buffers.setdefault(channel, _Buffer())

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
        if self.compat:
            raise ConfigurationError("at-least-once channels need the native layout")
        self._ensure_mover()
        return reliable.reserve(self, channel, timeout, visibility)

    def ack(self, channel: str, receipt: bytes) -> bool:
        """Finish a reserved message; False if its visibility timeout had passed."""
        return reliable.ack(self, channel, receipt)

    def new_channel(self, prefix: str = "specific") -> str:
        name = self._new_channel_name(prefix)
        if self.compat:
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
        self._attached[channel] = callback
        buffer = self._buffers.pop(channel, None)
        if buffer is not None:
            now = time.time()
            for expires_at, message in buffer.items:
                if expires_at >= now:
                    self._call(channel, callback, message)
            buffer.event.set()
        self._ensure_readers()

    def detach(self, channel: str) -> None:
        """Stop delivery and leave the groups this process joined for ``channel``."""
        self._attached.pop(channel, None)
        buffer = self._buffers.pop(channel, None)
        if buffer is not None:
            buffer.event.set()
        self._forget_recovery(channel)
        if channel in self._tracked:
            try:
                self._untrack_channel(channel)
            except LayerUnavailable:
                logger.info("presence of %s not removed now: Redis unreachable", channel)
        for group, last_local in self.members.drop_channel(channel):
            try:
                self.layout.group_discard(group, channel, last_local=last_local)
            except LayerUnavailable:
                self._pending_discards.add((group, channel))

    def _call(self, channel: str, callback: Callback, message: Message) -> None:
        try:
            callback(message)
            self.counters["delivered"] += 1
        except ChannelFull:
            self.counters["dropped_full"] += 1
            record_drop("mailbox_full", detail=f"connection {channel}")
        except Exception:
            logger.exception("attach() callback for %s raised; message dropped", channel)
            record_drop("callback_error", detail=f"connection {channel}")

    @staticmethod
    def _expire_buffer(channel: str, buffer: _Buffer, now: float) -> None:
        expired = 0
        while buffer.items and buffer.items[0][0] < now:
            buffer.items.popleft()
            expired += 1
        if expired:
            record_drop("expired", expired, detail=f"channel {channel}, never received")

    def dispatch(self, decoded: Decoded) -> None:
        """Hand one decoded item to its local channels (called by the readers)."""
        if decoded.control is not None:
            self._apply_membership(*decoded.control)
            return
        now = time.time()
        channels = decoded.channels or (
            self.members.members(decoded.group) if decoded.group else []
        )
        positioned = decoded.position is not None and decoded.group is not None
        if positioned:
            decoded.message["position"] = decoded.position
            decoded.message["group"] = decoded.group
            positioned = self._gating
        for channel in channels:
            callback = self._attached.get(channel)
            if positioned and not self._history_gate(channel, decoded.group, decoded.message):  # type: ignore[arg-type]
                continue
            if callback is not None:
                self._call(channel, callback, decoded.message)
                continue
            if not self._is_local(channel):
                continue  # not ours (a foreign writer): nothing to do with it
            buffer = self._buffers.get(channel)
            if buffer is None:
                buffer = self._buffers[channel] = _Buffer()
                if len(self._buffers) % 1024 == 0:
                    self._sweep_buffers(now)
            if len(buffer.items) >= self.get_capacity(channel):
                self.counters["dropped_full"] += 1
                record_drop("queue_full", detail=f"channel {channel}, nobody receiving")
                continue
            buffer.items.append((now + self.expiry, decoded.message))
            buffer.event.set()

    def _apply_membership(self, op: str, group: str, channel: str, joined_at: float) -> None:
        # Another process changed a membership of one of our channels.
        if not self._is_local(channel):
            return
        if op == "add":
            self.members.add(group, channel, joined_at)
        elif self.members.discard(group, channel):
            try:
                self.layout.drop_process_from_group(group)
            except LayerUnavailable:
                logger.debug("could not drop this process from %s; it expires", group)

    def _sweep_buffers(self, now: float) -> None:
        for name, buffer in list(self._buffers.items()):
            self._expire_buffer(name, buffer, now)
            if not buffer.items:
                del self._buffers[name]
                buffer.event.set()

    def count_bad_item(self, where: str, exc: MessageDecodeError) -> None:
        """Count and drop an item that does not decode (a rate-limited WARNING says so)."""
        self.counters["bad_items"] += 1
        record_drop("undecodable", detail=f"from {where}: {exc}")

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
        if local:
            self.members.add(group, channel)
            self._pending_discards.discard((group, channel))
        try:
            self.layout.group_add(group, channel)
        except LayerUnavailable:
            if not local:
                raise
            logger.debug("group_add(%s, %s) kept for when Redis is back", group, channel)
        if local:
            self._recover_on_join(group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        if group in self._tracked.get(channel, ()):
            self.presence_untrack(group, channel)
        self._forget_recovery(channel, group)
        last_local = self.members.discard(group, channel) if self._is_local(channel) else False
        try:
            self.layout.group_discard(group, channel, last_local=last_local)
        except LayerUnavailable:
            if not self._is_local(channel):
                raise
            self._pending_discards.add((group, channel))

    def group_channels(self, group: str) -> list[str]:
        validate_group_name(group)
        return self.layout.group_channels(group)  # type: ignore[no-any-return]

    # -- history and presence (layers/history.py, layers/presence.py) -----------------

    def history(self, group: str, since: Position | str | None = None) -> HistoryResult:
        """The retained history of ``group`` after ``since``: one round trip."""
        validate_group_name(group)
        options = self.groups_policy(group)
        if self.compat or not options.has_history:
            raise ValueError(f"group {group!r} has no history: add it to the layer's groups")
        return self.history_store.read(group, since, options)

    def presence(self, group: str) -> list[PresenceEntry]:
        """Every presence entry of ``group``, across processes: one round trip."""
        validate_group_name(group)
        return self.presence_store.list(group)

    def _is_member_here(self, group: str, channel: str) -> bool:
        return self._is_local(channel) and channel in self.members.members(group)

    def _track(self, group: str, entry: PresenceEntry) -> int:
        if self.compat:
            raise ConfigurationError("presence needs the native layout (not compat mode)")
        return self.presence_store.track(group, entry)

    def _untrack(self, group: str, channel: str) -> tuple[PresenceEntry, int] | None:
        return self.presence_store.untrack(group, channel)

    # -- background greenlets ---------------------------------------------------------------

    def _ensure_readers(self) -> None:
        if self._closed:
            return
        for shard in self.layout.reader_shards():
            reader = self._readers.get(shard.index)
            if reader is None or reader.dead:
                self._readers[shard.index] = gevent.spawn(self._read_loop, shard)
        self._ensure_mover()

    def _after_fork(self) -> None:
        # The parent's reader greenlets were copied into this child with the
        # parent's identity: retire them (they exit at their next turn) and
        # start afresh, under a new identity, on first use.
        super()._after_fork()
        self._generation += 1
        self._readers = {}
        self._attached.clear()
        self._lease_held, self._last_lease = False, 0.0  # the child's own lease, anew
        self._tracked.clear()
        self.presence_store.after_fork()
        for shard in self.shards:
            # Give each pool its new owner now. redis-py 5.0 does it lazily under a
            # plain Lock that a copied greenlet may hold (ChildDeadlockedError after
            # 5 s under gunicorn --preload); newer releases use an RLock.
            shard.pool.reset()

    def _read_loop(self, shard: Shard) -> None:
        """Block on this process's inbox on ``shard``; dispatch what arrives; survive outages."""
        generation = self._generation
        while not self._closed and generation == self._generation:
            if not shard.up:
                gevent.sleep(shard.wait_time())
                if not shard.ping():
                    continue
            self._maybe_renew_lease()
            try:
                raw_items = self.layout.pop_inbox(shard, self.block_timeout)
            except LayerUnavailable:
                continue
            except Exception:
                logger.exception("channel layer reader on %s failed; going on", shard.name)
                gevent.sleep(shard.backoff.base)
                continue
            for raw in raw_items:
                try:
                    decoded = self.layout.decode(raw)
                except MessageDecodeError as exc:
                    self.count_bad_item(f"{shard.name} inbox", exc)
                    continue
                if decoded is None:
                    record_drop("expired", detail=f"in this process's inbox on {shard.name}")
                else:
                    self.dispatch(decoded)
            self._maybe_renew()
            self._maybe_sweep_strays(shard)

    def _maybe_renew_lease(self) -> None:
        if self.lease > 0 and time.monotonic() - self._last_lease >= self.lease / 3:
            self._last_lease = time.monotonic()
            leases.renew(self)

    def _maybe_reap(self) -> None:
        if self.lease > 0 and time.monotonic() - self._last_reap >= self.lease / 2:
            self._last_reap = time.monotonic()
            try:
                leases.reap(self)
            except Exception:
                logger.exception("channel layer: reaping dead processes failed; going on")

    def _maybe_sweep_strays(self, home: Shard) -> None:
        # While hosts lists differ between processes (adding a shard, a
        # rolling restart), a sender may place this process's inbox on
        # another shard: look there too, now and then, without blocking.
        if len(self.shards) == 1 or time.monotonic() - self._last_sweep < self.block_timeout:
            return
        self._last_sweep = time.monotonic()
        for shard in self.shards:
            if shard is home or not shard.up:
                continue
            try:
                raw_items = self.layout.pop_stray(shard)
            except LayerUnavailable:
                continue
            for raw in raw_items:
                try:
                    decoded = self.layout.decode(raw)
                except MessageDecodeError as exc:
                    self.count_bad_item(f"{shard.name} inbox", exc)
                    continue
                if decoded is not None:
                    self.dispatch(decoded)

    def _ensure_mover(self) -> None:
        if not self._closed and (self._mover is None or self._mover.dead):
            self._mover = gevent.spawn(self._move_loop)

    def _move_loop(self) -> None:
        """Move due delayed messages on every shard; any process may do it (atomic in Lua)."""
        while not self._closed:
            next_due = time.time() + 0.5
            for shard in self.shards:
                if not shard.up and shard.wait_time() > 0:
                    continue
                try:
                    moved, dropped, due_ms = shard.call(
                        shard.move_due,
                        keys=[self.layout.delayed_key],
                        args=[int(time.time() * 1000), 500, max(1, int(self.expiry * 1000))],
                    )
                except LayerUnavailable:
                    continue
                except Exception:
                    logger.exception(
                        "channel layer: moving delayed messages on %s failed", shard.name
                    )
                    continue
                if dropped:
                    record_drop("queue_full", int(dropped), detail="delayed send, destination full")
                if moved >= 500:
                    next_due = time.time()
                elif float(due_ms) >= 0:
                    next_due = min(next_due, float(due_ms) / 1000)
            self._maybe_reap()
            self._mover_wake.clear()
            self._mover_wake.wait(max(0.0, min(0.5, next_due - time.time())))

    def _maybe_renew(self) -> None:
        # Memberships of long-lived connections would expire after
        # group_expiry; renew them at half-life.
        if time.monotonic() - self._last_renewal > self.group_expiry / 2:
            self._last_renewal = time.monotonic()
            for shard in self.shards:
                gevent.spawn(self._restore, shard)

    # -- outages ---------------------------------------------------------------------------

    def _on_recovered(self, shard: Shard) -> None:
        gevent.spawn(self._restore, shard)

    def _restore(self, shard: Shard) -> None:
        """Re-add this process's memberships (and apply discards) on ``shard``."""
        restored = 0
        for group, channel in self.members.items():
            if self.layout.group_shard(group) is shard:
                try:
                    self.layout.group_add(group, channel)
                    restored += 1
                except LayerUnavailable:
                    return
                self.members.add(group, channel)  # renewed
        for group, channel in list(self._pending_discards):
            if self.layout.group_shard(group) is shard:
                try:
                    self.layout.group_discard(
                        group, channel, last_local=not self.members.members(group)
                    )
                except LayerUnavailable:
                    return
                self._pending_discards.discard((group, channel))
        if restored:
            logger.info(
                "channel layer: restored %d group membership(s) on %s", restored, shard.name
            )

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
        buffers = list(self._buffers.values())
        self._buffers.clear()
        for buffer in buffers:
            buffer.event.set()
        self.members.clear()
        self._pending_discards.clear()
        self._attached.clear()
        self._tracked.clear()
        self.presence_store.local.clear()
        self._recovery_requests.clear()
        self._last_seen.clear()

    def close(self) -> None:
        """Stop the reader and mover greenlets and close every connection."""
        if self._readers:
            leases.release(self)
        if not self._closed:
            self.presence_store.close()
        self._closed = True
        for greenlet in [*self._readers.values(), self._mover]:
            if greenlet is not None:
                greenlet.kill(block=True, timeout=2)
        self._readers.clear()
        self._mover = None
        for shard in self.shards:
            shard.close()

    # -- marks (extension "marks"; see BaseChannelLayer.claim) ---------------------

    def _mark_key(self, key: str) -> tuple[Shard, str]:
        return self.shard_for("m:" + key), f"{self.layout.flush_pattern[:-1]}mark:{key}"

    def claim(self, key: str, ttl: float) -> bool:
        shard, name = self._mark_key(key)
        return bool(shard.call(shard.client.set, name, b"1", nx=True, px=max(1, int(ttl * 1000))))

    def put_mark(self, key: str, value: float, ttl: float) -> None:
        shard, name = self._mark_key(key)
        shard.call(shard.client.set, name, repr(float(value)), px=max(1, int(ttl * 1000)))

    def get_mark(self, key: str) -> float | None:
        shard, name = self._mark_key(key)
        raw = shard.call(shard.client.get, name)
        return None if raw is None else float(raw)

    def stats(self) -> dict[str, Any]:
        """Per-shard reachability, groups, members per group and queue depths.

        Also ``history`` (recovered / not_recovered / recovery_dropped_full)
        and ``presence`` (joins / leaves / refused, reaped_processes) counters.
        """
        stats = layer_stats(self)
        stats["history"] = dict(self.history_counters)
        stats["presence"] = {
            **self.presence_counters,
            "reaped_processes": self.presence_store.reaped_processes,
        }
        return stats

    # -- process heartbeats -------------------------------------------------------------

    @property
    def _heartbeat_prefix(self) -> str:
        return f"{self.prefix}:wsbridge:proc:"

    def publish_process(self, name: str, info: Mapping[str, Any], ttl: float) -> None:
        """Store the heartbeat on the ring's ``processes`` shard for ``ttl`` seconds.

        Raises:
            LayerUnavailable: that shard is down (the next beat tries again).
        """
        shard = self.shard_for("processes")
        data = msgpack.packb(dict(info), use_bin_type=True)
        shard.call(shard.client.set, self._heartbeat_prefix + name, data, px=int(ttl * 1000))

    def processes(self) -> list[dict[str, Any]]:
        """Every live process's last heartbeat (those that stopped beating expired)."""
        shard = self.shard_for("processes")
        keys = shard.call(
            lambda: list(shard.client.scan_iter(match=self._heartbeat_prefix + "*", count=1000))
        )
        if not keys:
            return []
        out = []
        # On a cluster the heartbeats sit in many slots: one MGET per slot.
        mget = shard.client.mget_nonatomic if self.cluster else shard.client.mget  # type: ignore[attr-defined]
        for raw in shard.call(mget, keys):
            if raw is None:
                continue
            try:
                out.append(msgpack.unpackb(raw, raw=False))
            except (ValueError, msgpack.UnpackException):
                record_drop("undecodable", detail="a process heartbeat")
        return out


#: The name channels_redis users know.
RedisChannelLayer = RedisLayer
