"""History and recovery: the capability contract both layers implement.

A group opts in by name or glob pattern in the layer's ``groups`` option
(``{"news": {"history": 100, "history_ttl": 600}, "chat.*": {"history": 50,
"presence": True}}``). Every ``group_send`` to such a group gets a
:class:`Position` (an *epoch* and an *offset*): offsets go up by one per
message of the group; the epoch changes whenever the history may have been
lost (a fresh in-memory layer, a Redis key lost or flushed). The position is
written together with the publish (in Redis: in the same Lua script), and
members see it on the event as ``event["position"]`` (``"<epoch>:<offset>"``)
with ``event["group"]`` naming the group: both keys are reserved on history
groups.

``layer.history(group, since=None)`` returns a :class:`HistoryResult`. A
connection that reconnects asks for recovery with
:meth:`HistoryMixin.request_recovery`; when its channel joins one of those
groups again, the layer delivers, before anything live for that group, a
``history.recovery`` event and then the missed messages in order, exactly
once (live messages that raced the read are held back and de-duplicated by
offset). See docs/topics/recovery.rst for the guarantees and their limits.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gevent.lock import BoundedSemaphore

from ..drops import record_drop
from ..exceptions import ChannelFull, ConfigurationError, LayerError

__all__ = [
    "Position",
    "HistoryResult",
    "GroupOptions",
    "GroupPolicy",
    "HistoryMixin",
    "RECOVERY_EVENT",
    "MAX_RECOVER_GROUPS",
]

logger = logging.getLogger("wsbridge.layers.history")

#: The event a recovering channel gets first, for each group it asked for.
RECOVERY_EVENT = "history.recovery"
#: Most groups one connection may ask to recover at once (more is refused).
MAX_RECOVER_GROUPS = 64
#: History reads for recovery running at once per layer; more wait their turn,
#: so a reconnect storm queues instead of taking every pooled connection.
RECOVERY_CONCURRENCY = 16

_EPOCH_RE = re.compile(r"^[0-9a-zA-Z_-]{1,32}\Z")
_MAX_OFFSET = 2**53


@dataclass(frozen=True, order=True)
class Position:
    """Where a message sits in its group's history: ``epoch`` plus ``offset``.

    Its text form, ``"<epoch>:<offset>"``, is what events, pages and
    ``Last-Event-ID`` carry; :meth:`parse` reads it back.
    """

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, value: object) -> Position | None:
        """The position written as ``value``, or None when it is not one (forged, garbled)."""
        if isinstance(value, Position):
            return value
        if not isinstance(value, str) or len(value) > 64:
            return None
        epoch, sep, offset = value.rpartition(":")
        if not sep or not _EPOCH_RE.match(epoch) or not offset.isdigit():
            return None
        number = int(offset)
        return cls(epoch, number) if number <= _MAX_OFFSET else None


@dataclass
class HistoryResult:
    """What :meth:`HistoryMixin.history` found.

    ``messages`` are the retained messages after ``since`` (all of them when
    ``since`` was None), oldest first, each with its ``position``; empty when
    ``recovered`` is False. ``position`` is the group's latest position (None:
    no history at all yet). ``recovered`` is False when ``since`` is too old
    (trimmed by size or age), from another epoch, in the future, or not a
    position at all: the caller cannot know what it missed and should reload
    its state.
    """

    messages: list[dict[str, Any]]
    position: Position | None
    recovered: bool


@dataclass(frozen=True)
class GroupOptions:
    """The options of one group: history size and age, presence events."""

    history: int = 0
    history_ttl: float = 300.0
    presence: bool = False

    @property
    def has_history(self) -> bool:
        return self.history > 0


_NO_OPTIONS = GroupOptions()
_KNOWN_KEYS = {"history", "history_ttl", "presence"}


class GroupPolicy:
    """Group name or glob pattern -> :class:`GroupOptions`; an exact name wins over patterns."""

    def __init__(self, groups: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._exact: dict[str, GroupOptions] = {}
        self._patterns: list[tuple[re.Pattern[str], GroupOptions]] = []
        for name, raw in (groups or {}).items():
            options = self._parse(name, raw)
            if any(c in name for c in "*?["):
                self._patterns.append((re.compile(fnmatch.translate(name)), options))
            else:
                self._exact[name] = options
        self._cache: dict[str, GroupOptions] = {}

    @staticmethod
    def _parse(name: object, raw: object) -> GroupOptions:
        if not isinstance(name, str) or not isinstance(raw, Mapping):
            raise ConfigurationError(
                f"groups: each entry is 'name or pattern': {{options}}, got {name!r}: {raw!r}"
            )
        unknown = set(raw) - _KNOWN_KEYS
        if unknown:
            raise ConfigurationError(
                f"groups[{name!r}]: unknown option(s) {sorted(unknown)}; "
                f"known: {sorted(_KNOWN_KEYS)}"
            )
        history = raw.get("history", 0)
        ttl = raw.get("history_ttl", 300.0)
        if type(history) is not int or not 0 <= history <= 100_000:
            raise ConfigurationError(f"groups[{name!r}]['history'] must be an int 0..100000")
        if not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ConfigurationError(f"groups[{name!r}]['history_ttl'] must be seconds > 0")
        return GroupOptions(history, float(ttl), bool(raw.get("presence", False)))

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def __call__(self, group: str) -> GroupOptions:
        found = self._cache.get(group)
        if found is not None:
            return found
        found = self._exact.get(group)
        if found is None:
            found = next((o for p, o in self._patterns if p.match(group)), _NO_OPTIONS)
        if len(self._cache) < 10_000:
            self._cache[group] = found
        return found


def judge(
    since: object, epoch: str | None, top: int, retained: list[tuple[int, dict[str, Any]]]
) -> HistoryResult:
    """Decide what a reader asking from ``since`` gets, given what is retained.

    ``retained`` is ``(offset, message)`` oldest first, already without the
    messages too old to keep. Shared by both layers so the rule is one.
    """
    position = Position(epoch, top) if epoch else None
    if since is None:
        return HistoryResult([m for _, m in retained], position, True)
    asked = Position.parse(since)
    if asked is None or position is None or asked.epoch != epoch or asked.offset > top:
        return HistoryResult([], position, False)
    if asked.offset == top:
        return HistoryResult([], position, True)
    first = retained[0][0] if retained else top + 1
    if first > asked.offset + 1:
        return HistoryResult([], position, False)  # some of what was missed is gone
    return HistoryResult([m for o, m in retained if o > asked.offset], position, True)


def offset_of(message: dict[str, Any]) -> Position | None:
    return Position.parse(message.get("position"))


class HistoryMixin:
    """What both layers share: the group policy, recovery requests and the live gate.

    A layer using it sets ``self.groups_policy`` and implements
    :meth:`history`; in ``group_add`` it calls ``_hold_before_join``
    before writing the membership and ``_recover_on_join`` after it; it
    calls ``_history_gate`` before handing a positioned group message to an
    attached channel, and ``_forget_recovery`` on detach.
    """

    groups_policy: GroupPolicy

    def _attached_callback(self, channel: str) -> Callable[[dict[str, Any]], None] | None:
        """The ``attach()`` callback of ``channel`` in this process, if any (layers override)."""
        return None

    def _init_history(self, groups: Mapping[str, Mapping[str, Any]] | None) -> None:
        self.groups_policy = GroupPolicy(groups)
        self._recovery_requests: dict[str, dict[str, str]] = {}
        self._recovering: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._last_seen: dict[str, dict[str, Position]] = {}
        self.history_counters = {"recovered": 0, "not_recovered": 0, "recovery_dropped_full": 0}
        self._recovery_slots = BoundedSemaphore(RECOVERY_CONCURRENCY)

    def group_options(self, group: str) -> GroupOptions:
        """The options configured for ``group`` (history size, ttl, presence)."""
        return self.groups_policy(group)

    def history(self, group: str, since: Position | str | None = None) -> HistoryResult:
        """The retained messages of ``group`` after ``since`` (all with None).

        Raises:
            ValueError: ``group`` has no history configured.
        """
        raise NotImplementedError

    def request_recovery(self, channel: str, positions: Mapping[str, str]) -> None:
        """Ask that ``channel``, when it joins one of these groups, first gets what it missed.

        ``positions`` maps group to the last position the client saw (as
        text). Entries for groups without history are ignored; a garbled or
        foreign position is answered with ``recovered: False``.

        Raises:
            ValueError: more than ``MAX_RECOVER_GROUPS`` (64) entries.
        """
        if len(positions) > MAX_RECOVER_GROUPS:
            raise ValueError(f"at most {MAX_RECOVER_GROUPS} groups can be recovered at once")
        wanted = {
            g: str(p)
            for g, p in positions.items()
            if isinstance(g, str) and self.groups_policy(g).has_history
        }
        if wanted:
            self._recovery_requests[channel] = wanted

    def _hold_before_join(self, group: str, channel: str) -> bool:
        """Start holding ``channel``'s live messages of ``group`` if it is to recover it.

        Called before the membership is written: once it is, live messages
        may arrive while the join's own I/O is still under way, and one that
        got through before the history read would be delivered twice (and
        out of order). Returns whether holding began; the caller then calls
        :meth:`_recover_on_join`, or :meth:`_release_hold` if the join failed.
        """
        requests = self._recovery_requests.get(channel)
        if not requests or group not in requests:
            return False
        self._recovering.setdefault((channel, group), [])
        return True

    def _release_hold(self, group: str, channel: str) -> None:
        """The join failed: stop holding, and deliver what was held (in order)."""
        held = self._recovering.pop((channel, group), None)
        if held:
            self._hand_over(channel, held)

    def _recover_on_join(self, group: str, channel: str) -> None:
        requests = self._recovery_requests.get(channel)
        if not requests or group not in requests:
            return
        since = requests.pop(group)
        if not requests:
            del self._recovery_requests[channel]
        key = (channel, group)
        self._recovering.setdefault(key, [])
        try:
            with self._recovery_slots:
                result = self.history(group, since)
        except LayerError as exc:
            failures = self.history_counters["not_recovered"] + 1
            if failures <= 10 or failures % 1000 == 0:
                logger.warning(
                    "recovery of %s for %s failed, told as not recovered: %s [%d so far]",
                    group,
                    channel,
                    exc,
                    failures,
                )
            result = HistoryResult([], None, False)
        finally:
            held = self._recovering.pop(key, [])
        self.history_counters["recovered" if result.recovered else "not_recovered"] += 1
        # What the client has once the notice and the history are through: held
        # live messages up to there are in the history already (or, when not
        # recovered, before the position the client is told to start from).
        last = Position.parse(since) if result.recovered else result.position
        for message in result.messages:
            pos = offset_of(message)
            if pos is not None and (last is None or pos > last):
                last = pos
        notice = {
            "type": RECOVERY_EVENT,
            "group": group,
            "recovered": result.recovered,
            "position": str(result.position) if result.position else None,
            "missed": len(result.messages),
        }
        out = [notice, *result.messages]
        for message in held:
            pos = offset_of(message)
            if pos is not None and last is not None and pos.epoch == last.epoch:
                if pos.offset <= last.offset:
                    continue  # in the history already
            out.append(message)
            last = pos or last
        if last is not None:
            self._last_seen.setdefault(channel, {})[group] = last
        self._hand_over(channel, out)

    def _hand_over(self, channel: str, messages: list[dict[str, Any]]) -> None:
        callback = self._attached_callback(channel)
        if callback is None:
            return
        for message in messages:
            try:
                callback(message)
            except ChannelFull:
                # Counted and said by wsbridge.drops; the fix is a capacity above
                # the group's history size (docs/topics/recovery.rst, Limits).
                self.history_counters["recovery_dropped_full"] += 1
                record_drop("mailbox_full", detail=f"a recovered message for {channel}")

    @property
    def _gating(self) -> bool:
        """Whether any channel is recovering or just recovered (else the gate is a no-op)."""
        return bool(self._recovering or self._last_seen)

    def _history_gate(self, channel: str, group: str, message: dict[str, Any]) -> bool:
        """True to deliver a live positioned message now; False: held or already delivered.

        Only needed around a recovery: a group's messages reach a process in
        offset order, so once one live message comes after what was
        recovered, the rest do too and the channel's entry is dropped.
        """
        if self._recovering:
            held = self._recovering.get((channel, group))
            if held is not None:
                held.append(message)
                return False
        seen = self._last_seen.get(channel)
        last = seen.get(group) if seen else None
        if last is None:
            return True
        pos = offset_of(message)
        if pos is None:
            return True
        if pos.epoch == last.epoch and pos.offset <= last.offset:
            return False
        del seen[group]  # type: ignore[union-attr]
        if not seen:
            del self._last_seen[channel]
        return True

    def _forget_recovery(self, channel: str, group: str | None = None) -> None:
        if group is None:
            self._recovery_requests.pop(channel, None)
            self._last_seen.pop(channel, None)
        else:
            seen = self._last_seen.get(channel)
            if seen is not None:
                seen.pop(group, None)


def now_ms() -> int:
    return int(time.time() * 1000)
