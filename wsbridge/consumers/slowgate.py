"""The per-connection side of slow-client policies (:mod:`wsbridge.policies`).

A :class:`Gate` sits between a connection's consumer and its transport for
messages of groups with a ``drop_oldest`` or ``coalesce`` policy. While the
transport's outbound backlog is under half its limit they pass straight
through; above it they wait here, bounded, and a flusher greenlet (alive only
while something waits) hands them over as the client catches up.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import gevent

from ..drops import record_drop
from ..policies import GROUP_KEY, GroupPolicy, counters, policy_for

__all__ = ["Gate"]

logger = logging.getLogger("wsbridge.policies")

#: Seconds between two looks at the backlog while messages wait.
FLUSH_INTERVAL = 0.02


class Gate:
    """Holds one connection's waiting policy-group messages.

    Args:
        send: the transport's send (never blocks for long).
        backlog: bytes the transport holds for the client right now.
        soft_limit: above this backlog, policy messages wait here.
        finished: True once the connection is over (the flusher stops).
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        backlog: Callable[[], int],
        soft_limit: int,
        finished: Callable[[], bool],
    ) -> None:
        self._send = send
        self._backlog = backlog
        self._soft = soft_limit
        self._finished = finished
        # (group, key) -> event, in hand-over order; key is a sequence (drop_oldest)
        # or the coalescing field's value.
        self._parked: OrderedDict[tuple[str, Any], dict[str, Any]] = OrderedDict()
        self._per_group: dict[str, deque[tuple[str, Any]]] = {}
        self._dropped: dict[str, int] = {}
        self._seq = 0
        self._flusher: Any = None
        # The group message being handled now, when its group has a policy.
        self._origin: tuple[str, GroupPolicy, dict[str, Any]] | None = None

    def begin(self, message: dict[str, Any]) -> None:
        """A group message is being handled: frames sent now follow its group's policy."""
        group = str(message[GROUP_KEY])
        policy = policy_for(group)
        self._origin = (group, policy, message) if policy is not None else None

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
            self._drop_oldest(event, group, policy)
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

    def _drop_oldest(self, event: dict[str, Any], group: str, policy: GroupPolicy) -> None:
        self._seq += 1
        slot = (group, self._seq)
        order = self._per_group.setdefault(group, deque())
        order.append(slot)
        self._parked[slot] = event
        while len(order) > policy.max_parked:
            self._parked.pop(order.popleft(), None)
            self._count_drop(group)

    def _count_drop(self, group: str) -> None:
        counters["dropped_oldest"] += 1
        record_drop("slow_client_dropped", detail=f"group {group}")
        self._dropped[group] = self._dropped.get(group, 0) + 1

    def _flush_loop(self) -> None:
        try:
            while self._parked and not self._finished():
                while self._parked and self._backlog() < self._soft and not self._finished():
                    slot, event = self._parked.popitem(last=False)
                    group = slot[0]
                    order = self._per_group.get(group)
                    if order and order[0] == slot:
                        order.popleft()
                    elif order:
                        order.remove(slot)
                    self._gap_notice(group)
                    self._send(event)
                gevent.sleep(FLUSH_INTERVAL)
        finally:
            self._flusher = None
            if self._finished():
                self._parked.clear()

    def _gap_notice(self, group: str) -> None:
        dropped = self._dropped.pop(group, 0)
        if not dropped:
            return
        counters["gap_notices"] += 1
        logger.info(
            "slow client: %d message(s) of group %s dropped (drop_oldest); sending a gap notice",
            dropped,
            group,
        )
        text = json.dumps({"wsbridge.gap": {"group": group, "dropped": dropped}})
        self._send({"type": "websocket.send", "text": text})
