"""The in-process channel layer: the embedded default for one process.

Everything lives in this process's memory: channels are bounded deques,
groups are dicts of member -> expiry time. It is greenlet-safe (gevent
switches only where a call waits) and is not shared between processes; use
the Redis layer for that.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Mapping
from re import Pattern
from typing import Any

import gevent

from ..drops import record_drop, warn_once
from ..exceptions import ChannelFull, InvalidChannelName
from .base import (
    BaseChannelLayer,
    Callback,
    Message,
    validate_channel_name,
    validate_group_name,
    validate_message,
)
from .buffer import LocalBuffers
from .history import HistoryMixin, HistoryResult, Position, judge
from .presence import DEFAULT_INFO_LIMIT, DEFAULT_LEASE, PresenceEntry, PresenceMixin, user_key

__all__ = ["MemoryLayer", "InMemoryChannelLayer"]

logger = logging.getLogger("wsbridge.layers")


class _GroupHistory:
    """The retained messages of one history group in this process."""

    __slots__ = ("epoch", "top", "items")

    def __init__(self, size: int) -> None:
        self.epoch = secrets.token_hex(4)
        self.top = 0
        self.items: deque[tuple[int, float, Message]] = deque(maxlen=size)

    def retained(self, now: float) -> list[tuple[int, Message]]:
        while self.items and self.items[0][1] < now:
            self.items.popleft()
        return [(offset, message) for offset, _, message in self.items]


class MemoryLayer(HistoryMixin, PresenceMixin, BaseChannelLayer):
    """Channel layer held in this process's memory.

    Accepts the same options as every layer (``expiry``, ``group_expiry``,
    ``capacity``, ``channel_capacity``, ``groups``, ``presence_info_limit``,
    ``presence_lease``: unused here, the process holds its own entries).
    Messages are validated and copied
    once at send time; a group send shares that one copy between members, so
    handlers must treat received messages as read-only.
    """

    extensions: tuple[str, ...] = (*BaseChannelLayer.extensions, "marks", "presence", "history")

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[str | Pattern[str], int] | None = None,
        groups: Mapping[str, Mapping[str, Any]] | None = None,
        presence_info_limit: int = DEFAULT_INFO_LIMIT,
        presence_lease: float = DEFAULT_LEASE,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise TypeError(f"MemoryLayer got unknown options: {', '.join(sorted(unknown))}")
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self._queues = LocalBuffers(time.monotonic, "in-memory channel, never received")
        self._groups: dict[str, dict[str, float]] = {}
        self._attached: dict[str, Callback] = {}
        self._member_of: dict[str, set[str]] = {}
        self._timers: set[gevent.Greenlet] = set()
        self._skipped_full = 0
        self._sends = 0
        self._marks: dict[str, tuple[float, float]] = {}  # key -> (value, expires at)
        self._init_history(groups)
        self._init_presence(presence_info_limit, presence_lease)
        self._histories: dict[str, _GroupHistory] = {}
        self._presence: dict[str, dict[str, PresenceEntry]] = {}
        self._presence_users: dict[str, dict[str, int]] = {}
        self._presence_seq: dict[str, int] = {}

    # -- sending -------------------------------------------------------------

    def send(self, channel: str, message: Message, *, delay: float | None = None) -> None:
        validate_channel_name(channel)
        message = validate_message(message)
        _warn_if_not_serving("send")
        if delay is not None and delay > 0:
            self._send_later(channel, message, delay)
            return
        self._deliver(channel, message)

    def _send_later(self, channel: str, message: Message, delay: float) -> None:
        due = time.monotonic() + delay
        current: list[gevent.Greenlet] = []

        def arm(seconds: float) -> None:
            timer = gevent.spawn_later(seconds, fire)
            current[:] = [timer]
            self._timers.add(timer)

        def fire() -> None:
            self._timers.discard(current[0])
            remaining = due - time.monotonic()
            if remaining > 0:
                arm(remaining)  # the event loop's clock can lag: never deliver early
                return
            try:
                self._deliver(channel, message)
            except ChannelFull:
                record_drop("queue_full", detail=f"delayed send to {channel}")

        arm(delay)

    def _deliver(self, channel: str, message: Message) -> None:
        callback = self._attached.get(channel)
        if callback is not None:
            callback(message)
            return
        if not self._queues.put(channel, message, self.get_capacity(channel), self.expiry):
            raise ChannelFull(f"channel {channel!r} is at its capacity")
        self._sends += 1
        if self._sends % 4096 == 0:
            # Channels nobody receives from (a gone connection) would otherwise
            # keep their buffer forever; drop those whose messages expired.
            self._queues.sweep()

    # -- receiving -----------------------------------------------------------

    def receive(self, channel: str, timeout: float | None = None) -> Message | None:
        validate_channel_name(channel)
        if channel in self._attached:
            raise InvalidChannelName(f"channel {channel!r} is attached; it cannot be received")
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._queues.receive(channel, deadline)

    def _attached_callback(self, channel: str) -> Callback | None:
        return self._attached.get(channel)

    def new_channel(self, prefix: str = "specific") -> str:
        return self._new_channel_name(prefix)

    # -- push delivery ------------------------------------------------------

    def attach(self, channel: str, callback: Callback) -> None:
        validate_channel_name(channel)
        self._attached[channel] = callback
        # Anything that arrived before attaching is handed over in order.
        for message in self._queues.take_all(channel):
            callback(message)

    def detach(self, channel: str) -> None:
        self._attached.pop(channel, None)
        self._queues.drop(channel)
        self._forget_recovery(channel)
        self._untrack_channel(channel)
        for group in self._member_of.pop(channel, ()):
            members = self._groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._groups[group]

    # -- groups --------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = time.monotonic() + self.group_expiry
        # Tracked for every member (not only attached ones) so that a later
        # detach() finds the groups even when group_add came before attach().
        self._member_of.setdefault(channel, set()).add(group)
        self._recover_on_join(group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        if group in self._tracked.get(channel, ()):
            self.presence_untrack(group, channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]
        self._forget_membership(group, channel)
        self._forget_recovery(channel, group)

    def _forget_membership(self, group: str, channel: str) -> None:
        groups = self._member_of.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._member_of[channel]

    def group_send(self, group: str, message: Message) -> int:
        validate_group_name(group)
        message = validate_message(message)
        _warn_if_not_serving("group_send")
        positioned = bool(self.groups_policy) and self._record(group, message) and self._gating
        members = self._groups.get(group)
        if not members:
            return 0
        now = time.monotonic()
        skipped = 0
        expired = []
        for channel, until in list(members.items()):
            if until < now:
                expired.append(channel)
                continue
            if positioned and not self._history_gate(channel, group, message):
                continue
            try:
                self._deliver(channel, message)
            except ChannelFull:
                skipped += 1
        for channel in expired:
            members.pop(channel, None)
            self._forget_membership(group, channel)
        if not members:
            self._groups.pop(group, None)
        self._skipped_full += skipped
        if skipped:
            record_drop("group_member_full", skipped, detail=f"group {group}")
        return skipped

    # -- history ----------------------------------------------------------------

    def _record(self, group: str, message: Message) -> bool:
        # Give the message its position and keep it: nothing else can run
        # between this and the delivery below (no I/O), so both are one step.
        options = self.groups_policy(group)
        if not options.has_history or str(message.get("type", "")).startswith("presence."):
            return False  # presence events are news of the moment, never history
        store = self._histories.get(group)
        if store is None:
            store = self._histories[group] = _GroupHistory(options.history)
        store.top += 1
        message["position"] = f"{store.epoch}:{store.top}"
        message["group"] = group
        store.items.append((store.top, time.monotonic() + options.history_ttl, message))
        return True

    def history(self, group: str, since: Position | str | None = None) -> HistoryResult:
        validate_group_name(group)
        if not self.groups_policy(group).has_history:
            raise ValueError(f"group {group!r} has no history: add it to the layer's groups")
        store = self._histories.get(group)
        if store is None:
            return judge(since, None, 0, [])
        return judge(since, store.epoch, store.top, store.retained(time.monotonic()))

    # -- presence -----------------------------------------------------------------

    def _is_member_here(self, group: str, channel: str) -> bool:
        until = self._groups.get(group, {}).get(channel)
        return until is not None and until >= time.monotonic()

    def _track(self, group: str, entry: PresenceEntry) -> int:
        entries = self._presence.setdefault(group, {})
        old = entries.get(entry.channel)
        if old is not None:
            entries[entry.channel] = PresenceEntry(entry.channel, old.user, entry.info, old.since)
            return 0
        entries[entry.channel] = entry
        users = self._presence_users.setdefault(group, {})
        key = user_key(entry.channel, entry.user)
        users[key] = users.get(key, 0) + 1
        return self._next_seq(group) if users[key] == 1 else 0

    def _next_seq(self, group: str) -> int:
        self._presence_seq[group] = seq = self._presence_seq.get(group, 0) + 1
        return seq

    def _untrack(self, group: str, channel: str) -> tuple[PresenceEntry, int] | None:
        entries = self._presence.get(group)
        entry = entries.pop(channel, None) if entries is not None else None
        if entry is None:
            return None
        if not entries:
            del self._presence[group]
        users = self._presence_users[group]
        key = user_key(channel, entry.user)
        users[key] -= 1
        if users[key] > 0:
            return None
        del users[key]
        if not users:
            del self._presence_users[group]
        return entry, self._next_seq(group)

    def presence(self, group: str) -> list[PresenceEntry]:
        validate_group_name(group)
        return list(self._presence.get(group, {}).values())

    def group_channels(self, group: str) -> list[str]:
        validate_group_name(group)
        now = time.monotonic()
        return [c for c, until in self._groups.get(group, {}).items() if until >= now]

    # -- housekeeping --------------------------------------------------------

    def flush(self) -> None:
        # Receivers waiting on a dropped buffer look the channel up again.
        self._queues.clear()
        self._groups.clear()
        self._attached.clear()
        self._member_of.clear()
        self._marks.clear()
        self._histories.clear()
        self._presence.clear()
        self._presence_users.clear()
        self._presence_seq.clear()
        self._tracked.clear()
        self._recovery_requests.clear()
        self._last_seen.clear()
        for timer in list(self._timers):
            timer.kill(block=False)
        self._timers.clear()

    def close(self) -> None:
        self.flush()

    # -- marks (extension "marks"; see BaseChannelLayer.claim) ------------------

    def _live_mark(self, key: str, now: float) -> tuple[float, float] | None:
        found = self._marks.get(key)
        if found is not None and found[1] <= now:
            del self._marks[key]
            return None
        return found

    def _sweep_marks(self, now: float) -> None:
        if len(self._marks) % 1024 == 0:
            for key in [k for k, (_v, until) in self._marks.items() if until <= now]:
                del self._marks[key]

    def claim(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        if self._live_mark(key, now) is not None:
            return False
        self._sweep_marks(now)
        self._marks[key] = (1.0, now + ttl)
        return True

    def put_mark(self, key: str, value: float, ttl: float) -> None:
        now = time.monotonic()
        self._sweep_marks(now)
        self._marks[key] = (float(value), now + ttl)

    def get_mark(self, key: str) -> float | None:
        found = self._live_mark(key, time.monotonic())
        return None if found is None else found[0]

    def stats(self) -> dict[str, Any]:
        return {
            "backend": "memory",
            "groups": {name: len(members) for name, members in self._groups.items()},
            "channels": self._queues.depths(),
            "attached": len(self._attached),
            "marks": len(self._marks),
            "skipped_full": self._skipped_full,
            "history": dict(self.history_counters),
            "presence": dict(self.presence_counters),
        }


def _warn_if_not_serving(what: str) -> None:
    from ..process import is_serving

    if not is_serving():
        warn_once(
            "memory-layer-not-serving",
            "in-memory channel layer: %s from a process that serves no connections (pid %d); "
            "only this process can receive it, so it reaches no server process. Configure a "
            "shared layer (WSBRIDGE_LAYER=redis://..., or the Redis backend in the settings) "
            "to reach the servers from a shell, a cron job or another process.",
            what,
            os.getpid(),
        )


#: The name Channels users know.
InMemoryChannelLayer = MemoryLayer
