"""This process's view of which of its channels belong to which groups.

The native layout sends one group item per *process*, carrying only the
group name; the receiving process turns it into deliveries with this table.
It holds every membership of this process's channels: those added here and
those another process added (announced through the inbox). It is also what
is restored after a Redis outage.
"""

from __future__ import annotations

import time

__all__ = ["LocalMemberships"]


class LocalMemberships:
    """group -> {channel: joined_at} and channel -> {groups}, kept in step."""

    def __init__(self, group_expiry: float) -> None:
        self.group_expiry = group_expiry
        self._by_group: dict[str, dict[str, float]] = {}
        self._by_channel: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_channel)

    def add(self, group: str, channel: str, joined_at: float | None = None) -> None:
        self._by_group.setdefault(group, {})[channel] = joined_at or time.time()
        self._by_channel.setdefault(channel, set()).add(group)

    def discard(self, group: str, channel: str) -> bool:
        """Forget one membership; True when ``group`` has no local member left."""
        members = self._by_group.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._by_group[group]
        groups = self._by_channel.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._by_channel[channel]
        return group not in self._by_group

    def drop_channel(self, channel: str) -> list[tuple[str, bool]]:
        """Forget a channel; ``[(group, group_now_has_no_local_member), ...]``."""
        return [
            (group, self.discard(group, channel))
            for group in list(self._by_channel.get(channel, ()))
        ]

    def members(self, group: str) -> list[str]:
        """Unexpired local members of ``group`` (expired ones are forgotten)."""
        members = self._by_group.get(group)
        if not members:
            return []
        oldest = time.time() - self.group_expiry
        expired = [c for c, joined in members.items() if joined < oldest]
        for channel in expired:
            self.discard(group, channel)
        return list(members)

    def groups_of(self, channel: str) -> set[str]:
        return set(self._by_channel.get(channel, ()))

    def items(self) -> list[tuple[str, str]]:
        """Every (group, channel) pair."""
        return [(g, c) for g, members in self._by_group.items() for c in members]

    def clear(self) -> None:
        self._by_group.clear()
        self._by_channel.clear()
