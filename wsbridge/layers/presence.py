"""Presence: who is in a group, the capability contract both layers implement.

A connection tracks itself in a group it joined (``presence_track``) with a
small info dict; ``presence(group)`` lists the entries of every process in
one call. Entries are grouped by *user*: with ``"presence": True`` in the
group's options, members get ``presence.join`` when a user's first entry
appears and ``presence.leave`` when their last one goes, whichever process
each entry lives on, once per change. Each event carries ``seq``, which
goes up by one per join or leave of the group: events sent by different
processes can arrive in another order than the changes happened, and a
receiver that keeps the last ``seq`` per user and ignores older ones ends
with the right state. An entry without a user is its own
user (keyed by its channel).

In Redis each process holds a lease renewed every ``presence_lease / 3``
seconds; when a process dies without cleaning up (kill -9) any live process
removes its entries, and sends the leave events once, within about
``presence_lease * 4 / 3`` seconds. See docs/topics/presence.rst.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

from .base import validate_message

__all__ = [
    "PresenceEntry",
    "PresenceMixin",
    "DEFAULT_INFO_LIMIT",
    "DEFAULT_LEASE",
    "user_key",
    "check_info",
    "join_event",
    "leave_event",
]

#: Largest presence info, in msgpack bytes, accepted by ``presence_track``.
DEFAULT_INFO_LIMIT = 1024
#: Seconds a process's presence entries outlive it when it dies uncleanly.
DEFAULT_LEASE = 15.0


@dataclass(frozen=True)
class PresenceEntry:
    """One tracked connection: its channel, its user (or None), its info, since when."""

    channel: str
    user: str | None
    info: dict[str, Any]
    since: float

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb(
            [user_key(self.channel, self.user), self.user, self.info, self.since]
        )
        return packed

    @classmethod
    def unpack(cls, channel: str, data: bytes) -> PresenceEntry:
        _key, user, info, since = msgpack.unpackb(data, raw=False)
        return cls(channel, user, info, float(since))


def user_key(channel: str, user: str | None) -> str:
    """The key presence groups entries by: the user, or the channel for anonymous ones."""
    return "u:" + user if user is not None else "c:" + channel


def check_info(info: object, limit: int) -> dict[str, Any]:
    """Return a private copy of ``info`` if it is a msgpack dict of at most ``limit`` bytes.

    Raises:
        TypeError: not a dict of msgpack types.
        ValueError: larger than ``limit`` bytes once packed.
    """
    if info is None:
        return {}
    copy = validate_message(info)
    size = len(msgpack.packb(copy))
    if size > limit:
        raise ValueError(
            f"presence info is {size} bytes packed; the limit is {limit} (presence_info_limit)"
        )
    return copy


def join_event(group: str, entry: PresenceEntry, seq: int) -> dict[str, Any]:
    """The ``presence.join`` event; ``seq`` orders the group's joins and leaves."""
    return {
        "type": "presence.join",
        "group": group,
        "user": entry.user,
        "channel": entry.channel,
        "info": entry.info,
        "since": entry.since,
        "seq": seq,
    }


def leave_event(group: str, entry: PresenceEntry, seq: int) -> dict[str, Any]:
    """The ``presence.leave`` event; ``seq`` orders the group's joins and leaves."""
    return {
        "type": "presence.leave",
        "group": group,
        "user": entry.user,
        "channel": entry.channel,
        "info": entry.info,
        "seq": seq,
    }


class PresenceMixin:
    """The part of presence both layers share: argument checks and local bookkeeping.

    A layer implements ``_track`` / ``_untrack`` (returning whether the
    user joined / left) and :meth:`presence`; this class checks arguments,
    keeps which groups each local channel is tracked in (so ``detach``
    untracks them all) and sends the events.
    """

    presence_info_limit: int

    def _init_presence(self, info_limit: int, lease: float) -> None:
        if info_limit < 1 or lease <= 0:
            raise ValueError("presence_info_limit and presence_lease must be positive")
        self.presence_info_limit = info_limit
        self.presence_lease = float(lease)
        self._tracked: dict[str, set[str]] = {}
        self.presence_counters = {"joins": 0, "leaves": 0, "refused": 0}

    # -- the contract -----------------------------------------------------------

    def presence_track(
        self, group: str, channel: str, *, user: str | None = None, info: Any = None
    ) -> bool:
        """Track ``channel`` in ``group``; True when this made ``user`` join the group.

        Tracking again updates the info (no event). The channel must be a
        member of ``group`` (joined with ``group_add`` in this process).

        Raises:
            PermissionError: the channel is not a member of ``group`` here.
            ValueError: info too large.
            TypeError: info not of msgpack types.
        """
        from .base import validate_channel_name, validate_group_name

        validate_group_name(group)
        validate_channel_name(channel)
        if user is not None and (not isinstance(user, str) or len(user) > 200):
            raise TypeError("presence user must be a str of at most 200 characters, or None")
        try:
            info = check_info(info, self.presence_info_limit)
        except (TypeError, ValueError):
            self.presence_counters["refused"] += 1
            raise
        if not self._is_member_here(group, channel):
            self.presence_counters["refused"] += 1
            raise PermissionError(
                f"{channel} is not a member of group {group!r} in this process: "
                "group_add it before tracking it"
            )
        entry = PresenceEntry(channel, user, info, time.time())
        seq = self._track(group, entry)
        self._tracked.setdefault(channel, set()).add(group)
        if seq:
            self._presence_event(group, join_event(group, entry, seq), "joins")
        return bool(seq)

    def presence_untrack(self, group: str, channel: str) -> bool:
        """Stop tracking ``channel`` in ``group``; True when its user left the group."""
        groups = self._tracked.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._tracked[channel]
        left = self._untrack(group, channel)
        if left is not None:
            self._presence_event(group, leave_event(group, *left), "leaves")
            return True
        return False

    def presence(self, group: str) -> list[PresenceEntry]:
        """Every entry of ``group``, across all processes, in one call."""
        raise NotImplementedError

    def presence_tracked(self, channel: str) -> set[str]:
        """The groups ``channel`` is tracked in, in this process."""
        return set(self._tracked.get(channel, ()))

    # -- for the layers -----------------------------------------------------------

    def _untrack_channel(self, channel: str) -> None:
        for group in sorted(self._tracked.pop(channel, ())):
            left = self._untrack(group, channel)
            if left is not None:
                self._presence_event(group, leave_event(group, *left), "leaves")

    def _presence_event(self, group: str, event: dict[str, Any], counter: str) -> None:
        self.presence_counters[counter] += 1
        if self._presence_events_on(group):
            self.group_send(group, event)  # type: ignore[attr-defined]

    def _presence_events_on(self, group: str) -> bool:
        policy = getattr(self, "groups_policy", None)
        return bool(policy and policy(group).presence)

    def _is_member_here(self, group: str, channel: str) -> bool:
        raise NotImplementedError

    def _track(self, group: str, entry: PresenceEntry) -> int:
        """Store ``entry``; the group's new event sequence number if its user joined, else 0."""
        raise NotImplementedError

    def _untrack(self, group: str, channel: str) -> tuple[PresenceEntry, int] | None:
        """Remove the entry; ``(entry, sequence number)`` if its user left, else None."""
        raise NotImplementedError
