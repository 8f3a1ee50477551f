"""Slow-client policies per group: what happens when a client cannot keep up.

By default a client that does not read is closed once its outbound queue
passes the transport's limit (``max_outbound_bytes``: 1013). A group can
choose instead (configure every process alike: ``wrap(group_policies=...)``
or ``WSBRIDGE["GROUP_POLICIES"]``)::

    wsbridge.wrap(app, group_policies={
        "ticker.*": GroupPolicy("coalesce", key="symbol"),  # latest per symbol only
        "feed.*": GroupPolicy("drop_oldest"),                # newest kept, gap notice
    })

* ``close`` (the default): nothing special; the transport closes at its limit.
* ``drop_oldest``: once the client's queue is half full, that group's messages
  wait in a bounded list (``max_parked``); the oldest are dropped past it,
  counted, and the client gets a gap notice ``{"wsbridge.gap": {"group": G,
  "dropped": N}}`` before the next message of the group. In a group with a
  history nothing is dropped while the history holds it: the connection
  replays the group from its history once the client has caught up
  (``wsbridge.consumers.slowgate``); past the history the notice says
  ``"recovered": false``.
* ``coalesce``: while the queue is half full, only the latest message per
  ``key`` (a field of the layer message, e.g. ``symbol``) waits; older ones
  are replaced, counted as coalesced.

A group message sent with ``group_send`` to a group with a policy carries
``"wsbridge.group"`` (the group's name), which is how the receiving
connection knows which policy applies; messages of other groups are left
as they are.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GroupPolicy",
    "configure_group_policies",
    "policy_for",
    "active",
    "GROUP_KEY",
    "counters",
]

logger = logging.getLogger("wsbridge.policies")

#: The key group_send adds to a message of a group that has a policy.
GROUP_KEY = "wsbridge.group"
_MODES = ("close", "drop_oldest", "coalesce")


@dataclass(frozen=True)
class GroupPolicy:
    """How a group's messages wait for a slow client (see the module docstring).

    Args:
        mode: ``"close"``, ``"drop_oldest"`` or ``"coalesce"``.
        key: for ``coalesce``, the message field naming what is coalesced.
        max_parked: messages (drop_oldest) or keys (coalesce) that may wait per
            connection and group; past it the oldest is dropped and counted.
    """

    mode: str = "close"
    key: str | None = None
    max_parked: int = 256

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"unknown slow-client mode {self.mode!r}; known: {', '.join(_MODES)}")
        if self.mode == "coalesce" and not self.key:
            raise ValueError("a coalesce policy needs key= (the field to coalesce on)")
        if self.max_parked < 1:
            raise ValueError("max_parked must be >= 1")


_rules: list[tuple[str, GroupPolicy]] = []
_cache: dict[str, GroupPolicy | None] = {}
#: Per reason, for status: messages dropped / coalesced, gap notices sent.
counters: dict[str, int] = {"dropped_oldest": 0, "coalesced": 0, "gap_notices": 0}


def configure_group_policies(
    policies: Mapping[str, GroupPolicy | str | Mapping[str, Any]] | None,
) -> None:
    """Set this process's policies: glob pattern -> policy (or its mode, or its fields)."""
    rules: list[tuple[str, GroupPolicy]] = []
    for pattern, spec in (policies or {}).items():
        if isinstance(spec, GroupPolicy):
            policy = spec
        elif isinstance(spec, str):
            policy = GroupPolicy(spec)
        else:
            policy = GroupPolicy(**dict(spec))
        rules.append((pattern, policy))
    _rules[:] = rules
    _cache.clear()


def active() -> bool:
    """True when any group has a policy (transports then give connections a gate)."""
    return bool(_rules)


def policy_for(group: str) -> GroupPolicy | None:
    """The policy of ``group`` (first matching pattern), or None for the default (close)."""
    if not _rules:
        return None
    try:
        return _cache[group]
    except KeyError:
        pass
    found = next((p for pattern, p in _rules if fnmatch.fnmatchcase(group, pattern)), None)
    if found is not None and found.mode == "close":
        found = None
    if len(_cache) < 10_000:
        _cache[group] = found
    return found


def tag(group: str, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with the group's name when the group has a policy (called by group_send)."""
    if _rules and GROUP_KEY not in message and policy_for(group) is not None:
        return {**message, GROUP_KEY: group}
    return message
