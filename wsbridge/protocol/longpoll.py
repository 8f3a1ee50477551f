"""Long-poll session state, sans-I/O: sequence numbers, acks, the outbound buffer, expiry.

One :class:`LongPollSession` per long-poll client, held by the process that
opened it. The transport feeds it what happened (the consumer accepted, sent,
closed; a poll acked up to ``n``; a send carried frames; time passed) and
reads back what to do (the frames a poll returns, the frames to hand to the
consumer, whether the session has expired). It never blocks, never touches a
socket and never reads the clock: the caller passes ``now``.

Exactness (see ``docs/topics/protocol.rst``):

* server to client: every frame gets the next ``seq``; a frame stays in the
  buffer until a later poll acks it, so a lost poll response is delivered
  again and the client drops any ``seq`` it has already seen;
* client to server: the client numbers its frames too; frames at or below
  the last applied ``seq`` are duplicates of a retried send and are skipped.

States and the events that move between them live in :data:`TRANSITIONS`
(the docs draw the diagram from it). Tokens are signed in
:mod:`wsbridge.protocol.longpoll_token`; the messages between processes
(relayed requests, hand-offs) are in :mod:`wsbridge.protocol.longpoll_messages`.

Hand-off (a graceful restart with a shared layer): :meth:`LongPollSession.snapshot`
turns an open session into msgpack types,
:class:`~wsbridge.protocol.longpoll_messages.HandOff` carries it with
the token binding and the scope to another process, and
:meth:`LongPollSession.restore` rebuilds it there with the same sequence
numbers and unacked frames, so the client sees one unbroken session.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..exceptions import BadRequest, WSBridgeError
from .closecodes import CloseCode
from .envelope import Frame

# Moved to their own modules; still importable from here (the public paths of 0.1).
from .longpoll_messages import (
    HANDOFF_VERSION,
    HandOff,
    handoff_channel,
    session_group,
)
from .longpoll_messages import MAX_SESSION_MACS as MAX_SESSION_MACS
from .longpoll_token import SESSION_ID_BYTES, Token, TokenSigner, new_session_id

__all__ = [
    "SessionState",
    "Accept",
    "Refuse",
    "ServerClose",
    "ClientClose",
    "CloseAcked",
    "Expire",
    "HandedOff",
    "HandOff",
    "HANDOFF_VERSION",
    "handoff_channel",
    "session_group",
    "TRANSITIONS",
    "LocalProtocolError",
    "LongPollSession",
    "TokenSigner",
    "Token",
    "new_session_id",
    "SESSION_ID_BYTES",
]


class LocalProtocolError(WSBridgeError):
    """The transport drove the session wrongly (a bug in the caller, not the client's fault)."""


class SessionState(enum.Enum):
    """Where a long-poll session is in its life."""

    #: Opened by the client; the consumer has not accepted yet.
    CONNECTING = "connecting"
    #: Accepted, frames flow both ways.
    OPEN = "open"
    #: The server queued its close frame; waiting for a poll to ack it.
    CLOSING = "closing"
    #: Over (refused, closed by the client, close acked, or expired).
    CLOSED = "closed"
    #: Handed to another process on a graceful restart; this process no longer serves it.
    MOVED = "moved"


# -- events that move the state --------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """The consumer accepted the connection."""

    subprotocol: str | None = None


@dataclass(frozen=True)
class Refuse:
    """The consumer refused (closed before accepting): HTTP ``status`` to the opener."""

    status: int = 403


@dataclass(frozen=True)
class ServerClose:
    """The consumer closed, or the buffer overflowed: a close frame is queued."""

    code: int
    reason: str = ""


@dataclass(frozen=True)
class ClientClose:
    """The client asked to close."""

    code: int = CloseCode.NORMAL
    reason: str = ""


@dataclass(frozen=True)
class CloseAcked:
    """A poll acked the server's close frame: the client has seen it."""


@dataclass(frozen=True)
class Expire:
    """The session was silent too long (or its consumer never answered)."""


@dataclass(frozen=True)
class HandedOff:
    """The process is going away and handed the session to the channel layer."""


Event = Accept | Refuse | ServerClose | ClientClose | CloseAcked | Expire | HandedOff

S = SessionState
#: (state, event type) -> next state. Pairs not listed are a LocalProtocolError.
TRANSITIONS: dict[tuple[SessionState, type], SessionState] = {
    (S.CONNECTING, Accept): S.OPEN,
    (S.CONNECTING, Refuse): S.CLOSED,
    (S.CONNECTING, ClientClose): S.CLOSED,
    (S.CONNECTING, Expire): S.CLOSED,
    (S.OPEN, ServerClose): S.CLOSING,
    (S.OPEN, ClientClose): S.CLOSED,
    (S.OPEN, Expire): S.CLOSED,
    (S.CLOSING, CloseAcked): S.CLOSED,
    (S.CLOSING, ClientClose): S.CLOSED,
    (S.CLOSING, Expire): S.CLOSED,
    (S.OPEN, HandedOff): S.MOVED,
    (S.CLOSING, HandedOff): S.MOVED,
}
_FINAL = frozenset((S.CLOSED, S.MOVED))
del S


class LongPollSession:
    """The state of one long-poll session.

    Args:
        sid: the session id (:func:`~wsbridge.protocol.longpoll_token.new_session_id`).
        now: the current monotonic time, in seconds.
        timeout: seconds of silence (no request in progress) after which
            :meth:`expired` turns true.
        max_buffer: frames the server may hold unacked; one more closes the
            session with 1013 (the client is too slow).
        max_buffer_bytes: the same bound on the payload bytes held.
    """

    def __init__(
        self,
        sid: bytes,
        *,
        now: float,
        timeout: float = 60.0,
        max_buffer: int = 1000,
        max_buffer_bytes: int = 4 << 20,
    ) -> None:
        self.sid = sid
        self.state = SessionState.CONNECTING
        self.timeout = timeout
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.subprotocol: str | None = None
        #: The close frame's code once one is queued or the client closed.
        self.close_code: int | None = None
        self._buffer: deque[Frame] = deque()
        self._buffer_bytes = 0
        self._next_seq = 1
        self._acked = 0
        self._client_seq = 0
        self._active = 0
        self._last_seen = now

    # -- state ------------------------------------------------------------------

    def _transition(self, event: Event) -> SessionState:
        try:
            self.state = TRANSITIONS[(self.state, type(event))]
        except KeyError:
            raise LocalProtocolError(
                f"{type(event).__name__} is not allowed in state {self.state.name}"
            ) from None
        return self.state

    def accept(self, subprotocol: str | None = None) -> None:
        """The consumer accepted: frames may now be queued."""
        self.subprotocol = subprotocol
        self._transition(Accept(subprotocol))

    def refuse(self, status: int = 403) -> None:
        """The consumer refused the connection; answer the open request with ``status``."""
        self._transition(Refuse(status))

    def client_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The client closed; tell the consumer ``websocket.disconnect`` with ``code``."""
        if self.state is SessionState.MOVED:
            return
        if self.state is not SessionState.CLOSED:
            self.close_code = int(code)
            self._transition(ClientClose(code, reason))
        self._drop_buffer()

    def expire(self) -> None:
        """Give up on the client; tell the consumer ``websocket.disconnect`` (1006)."""
        if self.state is SessionState.MOVED:
            return  # its frames may still answer a poll held here
        if self.state is not SessionState.CLOSED:
            self._transition(Expire())
        self._drop_buffer()

    def hand_off(self) -> None:
        """The session now lives elsewhere (its :meth:`snapshot` was handed over).

        The unacked frames stay readable, so a poll already held here can
        still be answered; nothing new is queued.
        """
        self._transition(HandedOff())

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    @property
    def moved(self) -> bool:
        """True once the session was handed to another process."""
        return self.state is SessionState.MOVED

    # -- server to client ---------------------------------------------------------

    def queue(self, text: str | None = None, data: bytes | None = None) -> Frame | None:
        """Queue one message from the consumer for the next poll.

        Returns:
            The queued frame; None when the session no longer takes messages
            (closing or closed: the message is dropped, as a WebSocket would);
            or the close frame (``frame.is_close``) when the buffer was full:
            the session is now CLOSING with 1013 and the caller must tell the
            consumer it is disconnected.
        """
        if self.state is not SessionState.OPEN:
            if self.state is SessionState.CONNECTING:
                raise LocalProtocolError("the consumer sent before accepting")
            return None
        size = _payload_size(text, data)
        if (
            len(self._buffer) >= self.max_buffer
            or self._buffer_bytes + size > self.max_buffer_bytes
        ):
            return self.queue_close(CloseCode.TRY_AGAIN_LATER, "client too slow: buffer full")
        frame = Frame(self._next_seq, text=text, data=data if text is None else None)
        self._next_seq += 1
        self._buffer.append(frame)
        self._buffer_bytes += size
        return frame

    def queue_close(self, code: int, reason: str = "") -> Frame | None:
        """Queue the server's close frame; None if the session is already closing or closed."""
        if self.state is not SessionState.OPEN:
            if self.state is SessionState.CONNECTING:
                raise LocalProtocolError("a close before accept is a refusal: call refuse()")
            return None
        code = int(code)  # a CloseCode travels as a plain int (JSON, msgpack hand-offs)
        frame = Frame(self._next_seq, close=code, reason=reason)
        self._next_seq += 1
        self._buffer.append(frame)
        self.close_code = code
        self._transition(ServerClose(code, reason))
        return frame

    def ack(self, seq: int) -> None:
        """Forget frames up to ``seq``: the client has them.

        An ack below an earlier one comes from a retried request and is
        ignored. Acking the close frame ends the session.

        Raises:
            BadRequest: ``seq`` is not an integer, or is beyond the last frame sent.
        """
        if type(seq) is not int or seq < 0:
            raise BadRequest(f"'ack' must be a non-negative integer, got {seq!r}")
        last = self._next_seq - 1
        if seq > last:
            raise BadRequest(f"'ack' {seq} is beyond the last message sent ({last})")
        if seq <= self._acked:
            return
        self._acked = seq
        buffer = self._buffer
        while buffer and buffer[0].seq <= seq:
            frame = buffer.popleft()
            if frame.is_close:
                self._transition(CloseAcked())
            else:
                self._buffer_bytes -= _size(frame)

    def pending(self) -> list[Frame]:
        """Every frame not acked yet, in order: what a poll returns now."""
        return list(self._buffer)

    @property
    def has_pending(self) -> bool:
        return bool(self._buffer)

    @property
    def fill(self) -> int:
        """How full the unacked buffer is, in thousandths of its nearer bound (frames or bytes)."""
        return max(
            len(self._buffer) * 1000 // max(1, self.max_buffer),
            self._buffer_bytes * 1000 // max(1, self.max_buffer_bytes),
        )

    @property
    def version(self) -> tuple[int, int, str]:
        """Changes whenever a checkpoint older than the session would be wrong to restore.

        An ack alone does not count: a session restored from before it sends
        again frames the client has (with their ``seq``, so it drops them).
        """
        return (self._next_seq, self._client_seq, self.state.value)

    @property
    def acked(self) -> int:
        """The highest ``seq`` the client has acked."""
        return self._acked

    # -- client to server ---------------------------------------------------------

    def receive(self, frames: list[Frame]) -> list[Frame]:
        """Take the frames of a client send; return the new ones, in order, to hand on.

        Frames already applied (a retried send) are skipped. Frames that
        arrive while the server is closing are dropped, as a WebSocket drops
        frames after its close.

        Raises:
            BadRequest: the first frame skips ahead of the next expected
                ``seq``; nothing is applied.
        """
        if not frames:
            return []
        if frames[0].seq > self._client_seq + 1:
            raise BadRequest(
                f"message seq {frames[0].seq} skips ahead: "
                f"the next expected is {self._client_seq + 1}"
            )
        fresh = [frame for frame in frames if frame.seq > self._client_seq]
        if fresh:
            self._client_seq = fresh[-1].seq
        return fresh if self.state is SessionState.OPEN else []

    @property
    def client_seq(self) -> int:
        """The last client ``seq`` applied: what a send answers as ``ack``."""
        return self._client_seq

    # -- time -------------------------------------------------------------------

    def request_started(self, now: float) -> None:
        """A request for this session arrived; it is not silent while one is in progress."""
        self._active += 1
        self._last_seen = now

    def request_ended(self, now: float) -> None:
        """A request for this session was answered; the silence starts again."""
        self._active = max(0, self._active - 1)
        self._last_seen = now

    def expired(self, now: float) -> bool:
        """True when no request is in progress and none came for ``timeout`` seconds."""
        return (
            self.state not in _FINAL and self._active == 0 and now - self._last_seen > self.timeout
        )

    # -- hand-off -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The session as msgpack types, for :meth:`restore` in another process.

        Only an OPEN or CLOSING session can move; take the snapshot once the
        consumer has finished (nothing more will be queued), then call
        :meth:`hand_off`.

        Raises:
            LocalProtocolError: the session is connecting, closed or moved.
        """
        if self.state not in (SessionState.OPEN, SessionState.CLOSING):
            raise LocalProtocolError(f"a {self.state.name} session cannot be handed off")
        return {
            "state": self.state.value,
            "next_seq": self._next_seq,
            "acked": self._acked,
            "client_seq": self._client_seq,
            "subprotocol": self.subprotocol,
            "close_code": self.close_code,
            "buffer": [_frame_to_msg(frame) for frame in self._buffer],
        }

    @classmethod
    def restore(
        cls,
        sid: bytes,
        snapshot: Any,
        *,
        now: float,
        timeout: float = 60.0,
        max_buffer: int = 1000,
        max_buffer_bytes: int = 4 << 20,
    ) -> LongPollSession:
        """Rebuild a session from :meth:`snapshot`: same sequence numbers, same unacked frames.

        The silence clock starts again at ``now``; the limits are this
        process's. The buffer may hold more than ``max_buffer`` frames: they
        were queued under the old process's limits and are delivered anyway.

        Raises:
            ValueError: the snapshot is not one :meth:`snapshot` made (the
                caller drops it and the client opens a new session).
        """
        if not isinstance(snapshot, dict):
            raise ValueError("a session snapshot is a dict")
        try:
            state = SessionState(snapshot["state"])
            next_seq, acked, client_seq = (
                snapshot["next_seq"],
                snapshot["acked"],
                snapshot["client_seq"],
            )
            frames = [_frame_from_msg(item) for item in snapshot["buffer"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed session snapshot: {exc}") from None
        numbers = (next_seq, acked, client_seq)
        if state not in (SessionState.OPEN, SessionState.CLOSING) or not all(
            type(n) is int and n >= 0 for n in numbers
        ):
            raise ValueError("malformed session snapshot: state or counters")
        if [f.seq for f in frames] != list(range(acked + 1, next_seq)):
            raise ValueError("malformed session snapshot: the buffer does not follow 'acked'")
        if any(f.is_close for f in frames[:-1]) or (
            (state is SessionState.CLOSING) != bool(frames and frames[-1].is_close)
        ):
            raise ValueError("malformed session snapshot: misplaced close frame")
        session = cls(
            sid, now=now, timeout=timeout, max_buffer=max_buffer, max_buffer_bytes=max_buffer_bytes
        )
        session.state = state
        session.subprotocol = _opt(snapshot.get("subprotocol"), str)
        session.close_code = _opt(snapshot.get("close_code"), int)
        session._next_seq, session._acked, session._client_seq = next_seq, acked, client_seq
        session._buffer.extend(frames)
        session._buffer_bytes = sum(_size(f) for f in frames if not f.is_close)
        return session

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_bytes = 0


def _opt(value: Any, kind: type) -> Any:
    if value is not None and type(value) is not kind:
        raise ValueError(f"malformed session snapshot: {value!r} is not a {kind.__name__}")
    return value


def _frame_to_msg(frame: Frame) -> dict[str, Any]:
    # Like encode_frame, but bytes stay bytes: msgpack carries them as they are.
    if frame.close is not None:
        return {"seq": frame.seq, "close": frame.close, "reason": frame.reason}
    if frame.data is not None:
        return {"seq": frame.seq, "bytes": frame.data}
    return {"seq": frame.seq, "text": frame.text or ""}


def _frame_from_msg(item: Any) -> Frame:
    if not isinstance(item, dict) or type(item.get("seq")) is not int:
        raise ValueError(f"malformed frame in a session snapshot: {item!r}")
    seq = item["seq"]
    if isinstance(item.get("text"), str):
        return Frame(seq, text=item["text"])
    if isinstance(item.get("bytes"), bytes):
        return Frame(seq, data=item["bytes"])
    if type(item.get("close")) is int and isinstance(item.get("reason", ""), str):
        return Frame(seq, close=item["close"], reason=item.get("reason", ""))
    raise ValueError(f"malformed frame in a session snapshot: {item!r}")


def _size(frame: Frame) -> int:
    return _payload_size(frame.text, frame.data)


def _payload_size(text: str | None, data: bytes | None) -> int:
    # The UTF-8 size; an ASCII str (CPython knows it without a scan) is its length.
    if text is not None:
        return len(text) if text.isascii() else len(text.encode("utf-8"))
    return len(data or b"")


def transition_rows() -> list[tuple[str, str, str]]:
    """``(state, event, next state)`` rows of :data:`TRANSITIONS`, for the docs' diagram."""
    return [(a.value, event.__name__, b.value) for (a, event), b in TRANSITIONS.items()]
