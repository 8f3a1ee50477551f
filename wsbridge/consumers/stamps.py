"""Recovery on one connection: what the client last saw, and positions on the frames sent.

A client that asks to recover (``wsbridge.js`` adds ``wsbridge_recover``;
an SSE browser sends ``Last-Event-ID``) names the last position it saw per
history group (docs/topics/recovery.rst). :class:`Stamps` reads that once,
asks the layer to replay what was missed, and then, for a WebSocket, stamps
every frame sent while a history group's message is handled with that
message's position, recording it in ``scope[POSITIONS]`` as the frame goes
out (a long-poll hand-off carries what was sent).

It returns frames for the runner to send and never sends itself: the runner
decides whether the connection is open (the connection contract).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..exceptions import BadRequest
from ..layers.history import RECOVERY_EVENT
from ..protocol.connection import Send
from ..protocol.recovery import POSITIONS, check_positions, recovery_frame, wrap_frame

__all__ = ["Stamps", "refusals"]

logger = logging.getLogger("wsbridge.consumers")


class _RefusalLog:
    """Counts handshakes refused for bad recovery input; WARNING at most once a minute."""

    def __init__(self) -> None:
        self.count = 0
        self._last = 0.0

    def note(self, reason: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last >= 60:
            self._last = now
            logger.warning("refused a handshake: %s [%d so far]", reason, self.count)


#: Handshakes and requests refused for bad recovery input, in this process.
refusals = _RefusalLog()


class Stamps:
    """One connection's recovery state.

    Attributes:
        on: frames are stamped (a WebSocket whose client asked to recover).
        refusal: why the client's recovery input is refused (the handshake
            gets 403, an HTTP request 400), or None.
    """

    __slots__ = ("scope", "on", "refusal", "_current", "_stamped")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.on = False
        self.refusal: str | None = None
        self._current: tuple[str, str] | None = None
        self._stamped = False

    def ask(self, consumer: Any, layer: Any, channel_name: str | None) -> None:
        """Read what the client last saw; ask ``layer`` to replay what it missed."""
        # A long-poll session adopted from a stopped process carries the
        # positions of what was sent to it (scope[POSITIONS]); the query string
        # still holds those of its first open, which would replay too much.
        scope = self.scope
        carried = scope.get(POSITIONS) if scope.get("resumed") else None
        ask = getattr(consumer, "recovery_positions", None)
        try:
            if isinstance(carried, dict):
                positions: dict[str, str] | None = check_positions(carried)
            else:
                positions = ask() if ask is not None else None
        except BadRequest as exc:
            self.refusal = str(exc)
            return
        if positions is None:
            return
        self.on = scope.get("type") == "websocket"
        if self.on:
            scope[POSITIONS] = dict(positions)
        if positions and layer is not None and "history" in layer.extensions and channel_name:
            layer.request_recovery(channel_name, positions)

    def begin(self, event: dict[str, Any], kind: Any) -> Send | None:
        """A message is about to be handled; returns a recovery notice to send, if any.

        A history group's message makes the frames sent while handling it
        carry its position.
        """
        if kind == RECOVERY_EVENT:
            if not event.get("recovered") and event.get("position"):
                self.scope[POSITIONS][event["group"]] = event["position"]
            return Send(recovery_frame(event)["text"])
        position, group = event.get("position"), event.get("group")
        if isinstance(position, str) and isinstance(group, str):
            self._current = (group, position)
            self._stamped = False
        return None

    def stamp(self, step: Send) -> Send:
        """``step`` wrapped with the position of the message being handled, if any."""
        current = self._current
        if current is None:
            return step
        self._stamped = True
        # Recorded as the frame goes out: a hand-off carries what was sent.
        self.scope[POSITIONS][current[0]] = current[1]
        return Send(wrap_frame({"text": step.text, "bytes": step.data}, *current)["text"])

    def end(self, is_open: bool) -> Send | None:
        """The message was handled; returns an empty stamped frame if nothing was sent for it."""
        current, self._current = self._current, None
        if self._stamped or current is None or not is_open:
            return None
        # Nothing was sent for it: the page still learns the position.
        self.scope[POSITIONS][current[0]] = current[1]
        return Send(wrap_frame({}, *current)["text"])

    @property
    def handling(self) -> bool:
        """A history group's message is being handled (its frames get stamped)."""
        return self._current is not None
