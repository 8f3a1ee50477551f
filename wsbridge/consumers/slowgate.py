"""The per-connection side of slow-client policies (:mod:`wsbridge.policies`).

A :class:`Gate` sits between a connection's consumer and its transport for
messages of groups with a ``drop_oldest`` or ``coalesce`` policy. While the
transport's outbound backlog is under half its limit they pass straight
through; above it they wait here, bounded, and a flusher greenlet (alive only
while something waits) hands them over as the client catches up.

In a ``drop_oldest`` group that has a history (its messages carry a
position), nothing is dropped for good while the history still holds it:
the first time the oldest waiting frame would go, every waiting frame of the
group is let go and the group is *replayed*: its live messages are skipped
(they are in the history) until the client has caught up, then the runner
is posted a replay request and hands the consumer, in order, what the
history holds after the last message the client got. Live messages up to
the last one replayed are skipped after that, so each arrives once. Only
when the history no longer reaches back that far is the gap told to the
client (``"recovered": false``) and counted as dropped.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import gevent

from ..drops import record_drop
from ..exceptions import LayerError
from ..layers.history import Position
from ..policies import GROUP_KEY, GroupPolicy, counters, policy_for

__all__ = ["Gate", "REPLAY"]

logger = logging.getLogger("wsbridge.policies")

#: Seconds between two looks at the backlog while messages wait.
FLUSH_INTERVAL = 0.02
#: The type of the event the gate posts to its connection to replay a group.
REPLAY = "wsbridge.gap.replay"


class _Replay:
    """A group being replayed: from after ``since``; frames let go and messages skipped."""

    __slots__ = ("since", "lost", "skipped", "posted")

    def __init__(self, since: Position, lost: int) -> None:
        self.since = since
        self.lost = lost
        self.skipped = 0
        self.posted = False


class Gate:
    """Holds one connection's waiting policy-group messages.

    Args:
        send: the transport's send (never blocks for long).
        backlog: bytes the transport holds for the client right now.
        soft_limit: above this backlog, policy messages wait here.
        finished: True once the connection is over (the flusher stops).
        layer: the connection's channel layer, read for replays (None: no replays).
        post: queues an event in the connection's mailbox (the replay request).
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        backlog: Callable[[], int],
        soft_limit: int,
        finished: Callable[[], bool],
        layer: Any = None,
        post: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._send = send
        self._backlog = backlog
        self._soft = soft_limit
        self._finished = finished
        self._layer = layer if post is not None else None
        self._post = post
        # drop_oldest slot -> the position of the message it came from (history groups).
        self._positions: dict[tuple[str, Any], Position] = {}
        self._replays: dict[str, _Replay] = {}
        # group -> the last position a replay handed over: live ones up to it are skipped.
        self._replayed: dict[str, Position] = {}
        # (group, key) -> event, in hand-over order; key is a sequence (drop_oldest)
        # or the coalescing field's value.
        self._parked: OrderedDict[tuple[str, Any], dict[str, Any]] = OrderedDict()
        self._per_group: dict[str, deque[tuple[str, Any]]] = {}
        self._dropped: dict[str, int] = {}
        self._seq = 0
        self._flusher: Any = None
        # The group message being handled now, when its group has a policy.
        self._origin: tuple[str, GroupPolicy, dict[str, Any]] | None = None

    def messages_for(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """What to handle for a policy group's ``event``: itself, nothing, or a replay."""
        group = str(event[GROUP_KEY])
        if event.get("type") == REPLAY:
            return self._replay(group)
        state = self._replays.get(group)
        if state is not None:
            state.skipped += 1
            return []  # in the history: the replay hands it over
        last = self._replayed.get(group)
        if last is not None:
            pos = Position.parse(event.get("position"))
            if pos is not None and pos.epoch == last.epoch and pos.offset <= last.offset:
                return []  # handed over by the replay already
            del self._replayed[group]  # past it: so are the ones after
        return [event]

    def begin(self, message: dict[str, Any]) -> bool:
        """A group message is to be handled: frames sent now follow its group's policy.

        False means: skip it (its group is being replayed since it was queued).
        """
        group = str(message[GROUP_KEY])
        if group in self._replays:
            return False
        policy = policy_for(group)
        self._origin = (group, policy, message) if policy is not None else None
        return True

    def end(self) -> None:
        """The group message was handled."""
        self._origin = None

    @property
    def holding(self) -> bool:
        """Frames sent now may have to wait (:meth:`hold`)."""
        return self._origin is not None

    def hold(self, event: dict[str, Any]) -> bool:
        """Take ``event``, sent while handling a policy group's message, if it must wait."""
        if self._origin is None:
            return False
        group, policy, message = self._origin
        return self.offer(event, group, policy, message)

    def offer(
        self, event: dict[str, Any], group: str, policy: GroupPolicy, message: dict[str, Any]
    ) -> bool:
        """Take ``event`` if it must wait; False means: send it now."""
        if not self._parked and self._backlog() < self._soft:
            return False
        if policy.mode == "coalesce":
            self._coalesce(event, group, policy, message)
        else:
            self._drop_oldest(event, group, policy, message)
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_loop)
        return True

    def _coalesce(
        self, event: dict[str, Any], group: str, policy: GroupPolicy, message: dict[str, Any]
    ) -> None:
        value = message.get(policy.key or "")
        slot = (group, repr(value))
        if slot in self._parked:
            counters["coalesced"] += 1
            record_drop("coalesced", detail=f"group {group}")
            del self._parked[slot]
        else:
            order = self._per_group.setdefault(group, deque())
            order.append(slot)
            if len(order) > policy.max_parked:  # too many keys: the oldest goes
                self._parked.pop(order.popleft(), None)
                self._count_drop(group)
        self._parked[slot] = event

    def _drop_oldest(
        self, event: dict[str, Any], group: str, policy: GroupPolicy, message: dict[str, Any]
    ) -> None:
        self._seq += 1
        slot = (group, self._seq)
        order = self._per_group.setdefault(group, deque())
        order.append(slot)
        self._parked[slot] = event
        pos = Position.parse(message.get("position")) if self._layer is not None else None
        if pos is not None:
            self._positions[slot] = pos
        while len(order) > policy.max_parked:
            oldest = order.popleft()
            self._parked.pop(oldest, None)
            first = self._positions.pop(oldest, None)
            if first is not None:
                self._start_replay(group, first, order)
                return
            self._count_drop(group)

    def _start_replay(self, group: str, first: Position, order: deque[tuple[str, Any]]) -> None:
        # The oldest waiting frame of a history group would be dropped: let every
        # waiting frame of the group go and hand the group over from its history once
        # the client has caught up, from just before that frame's message.
        lost = 1 + len(order)
        for slot in order:
            self._parked.pop(slot, None)
            self._positions.pop(slot, None)
        del self._per_group[group]
        self._replays[group] = _Replay(Position(first.epoch, first.offset - 1), lost)
        counters["gap_replays"] = counters.get("gap_replays", 0) + 1

    def _replay(self, group: str) -> list[dict[str, Any]]:
        """The replay request came round: the messages to hand the consumer, in order."""
        state = self._replays.pop(group, None)
        if state is None or self._layer is None:
            return []
        try:
            result = self._layer.history(group, state.since)
            if not result.recovered:  # too far back: what the history still holds
                result = self._layer.history(group)
                recovered = False
            else:
                recovered = True
        except (LayerError, ValueError) as exc:
            # What is lost is said by record_drop (a rate-limited WARNING, counted).
            logger.info("slow client: replaying group %s failed: %s", group, exc)
            result, recovered = None, False
        messages = [{**m, GROUP_KEY: group} for m in (result.messages if result else [])]
        if not recovered:
            # A gap, told and counted: exactly, from the offsets, within one epoch.
            first = Position.parse(messages[0].get("position")) if messages else None
            since = state.since
            if first is not None and first.epoch == since.epoch and first.offset > since.offset:
                lost = first.offset - since.offset - 1
            else:
                lost = state.lost + state.skipped
            self._count_drop(group, lost)
            self._gap_notice(group, recovered=False)
        last = Position.parse(messages[-1].get("position")) if messages else None
        self._replayed[group] = last or state.since
        if recovered:
            counters["gap_recovered"] = counters.get("gap_recovered", 0) + 1
            logger.info(
                "slow client: group %s caught up from its history (%d message(s))",
                group,
                len(messages),
            )
        return messages

    def _count_drop(self, group: str, count: int = 1) -> None:
        counters["dropped_oldest"] += count
        record_drop("slow_client_dropped", count, detail=f"group {group}")
        self._dropped[group] = self._dropped.get(group, 0) + count

    def _flush_loop(self) -> None:
        try:
            while (self._parked or self._unposted()) and not self._finished():
                while self._parked and self._backlog() < self._soft and not self._finished():
                    slot, event = self._parked.popitem(last=False)
                    self._positions.pop(slot, None)
                    group = slot[0]
                    order = self._per_group.get(group)
                    if order and order[0] == slot:
                        order.popleft()
                    elif order:
                        order.remove(slot)
                    self._gap_notice(group)
                    self._send(event)
                if self._backlog() < self._soft and self._post is not None:
                    for group, state in self._replays.items():
                        if not state.posted:
                            state.posted = True
                            self._post({"type": REPLAY, GROUP_KEY: group})
                gevent.sleep(FLUSH_INTERVAL)
        finally:
            self._flusher = None
            if self._finished():
                self._parked.clear()
                self._positions.clear()

    def _unposted(self) -> bool:
        return any(not state.posted for state in self._replays.values())

    def _gap_notice(self, group: str, recovered: bool | None = None) -> None:
        dropped = self._dropped.pop(group, 0)
        if not dropped:
            return
        counters["gap_notices"] += 1
        logger.info(
            "slow client: %d message(s) of group %s dropped (drop_oldest); sending a gap notice",
            dropped,
            group,
        )
        gap: dict[str, Any] = {"group": group, "dropped": dropped}
        if recovered is not None:
            gap["recovered"] = recovered
        text = json.dumps({"wsbridge.gap": gap})
        self._send({"type": "websocket.send", "text": text})
