"""The connection contract: accept, refuse, send and close, and what each means on the wire.

Every transport (WebSocket, long-poll, HTTP/SSE) and the connection runner
follow these rules; they live here once, sans-I/O, as a state table in the
style of h11 (states as an enum, events as frozen dataclasses, the
transitions in :data:`TRANSITIONS`). No sockets, no gevent, no wsbridge
module outside ``protocol/``.

The rules::

    CONNECTING --Accept-------------> OPEN      answer the handshake (101 / session open)
    CONNECTING --Send---------------> OPEN      implicit accept, then the message
    CONNECTING --Close / Refuse-----> REFUSED   HTTP 403 (a close frame if already open)
    CONNECTING --Crash--------------> REFUSED   HTTP 500
    CONNECTING --Shutdown-----------> REFUSED   HTTP 503 (going away), else 403
    OPEN       --Send---------------> OPEN      a message
    OPEN       --Close / Shutdown---> CLOSING   a close frame with the code
    OPEN       --Crash--------------> CLOSING   a close frame with 1011
    any        --Disconnected-------> CLOSED    nothing: the client is gone
    (late Accept / Send / Close / Crash / Shutdown after the decision: dropped)
    Refuse after CONNECTING: ContractError (a bug in the caller)

How a transport uses it
-----------------------
The runner (:class:`wsbridge.consumers.runner.Connection`) owns one
:class:`ConnectionContract` per connection. It turns each event the
consumer emits (``websocket.accept`` / ``send`` / ``close`` dicts, through
:func:`from_asgi`) and its own decisions (:class:`Refuse` when ``connect()``
returned without deciding, :class:`Crash` when the consumer raised) into
contract events, feeds them to :meth:`ConnectionContract.send`, and hands
every resulting output to the transport, in order:

* :class:`Opened`: answer the handshake (``implicit`` when a message came
  before ``accept()``).
* :class:`Refused`: answer the handshake with its HTTP ``status``; a
  transport that can no longer answer with HTTP (the server already said
  101, or a long-poll session resumed in another process) sends a close
  frame with :attr:`Refused.close_code` instead.
* :class:`Message`: one text or binary message.
* :class:`CloseFrame`: start the closing handshake with ``code``/``reason``;
  ``revoked`` means the identity layer ended it (no reconnect with the same
  credentials; long-poll keeps a tombstone).

A transport passes ``Connection(..., outputs=callable)`` to receive these
typed outputs; a plain ``send`` callable (the testing ``Communicator``)
gets them as ASGI-style dicts from :func:`to_asgi`. The transport reports
the client's end with ``Connection.disconnected(code)``, which feeds
:class:`Disconnected`. A transport that closes on its own during a
handshake (server shutdown) answers ``refusal_for(Shutdown(code)).status``
(503 when going away, else 403).

HTTP consumers (plain responses, streams, SSE) speak ``http.response.*``
events, not these: their transport writes what the consumer sends. The
rules they share with the table come from it too: a refusal before the
response is ``refusal_for(Close()).status`` (403, ``DenyConnection``), and an
exchange that ends or crashes before its response started gets
``refusal_for(Crash()).status`` (500).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .closecodes import CloseCode

__all__ = [
    "State",
    "Accept",
    "Send",
    "Close",
    "Refuse",
    "Crash",
    "Shutdown",
    "Disconnected",
    "Event",
    "Opened",
    "Refused",
    "Message",
    "CloseFrame",
    "Output",
    "Wire",
    "TRANSITIONS",
    "ConnectionContract",
    "ContractError",
    "from_asgi",
    "to_asgi",
    "refusal_for",
]

Header = tuple[bytes | str, bytes | str]


class ContractError(RuntimeError):
    """A caller drove the contract wrongly (a bug in wsbridge, never the client's fault)."""


class State(enum.Enum):
    """Where a connection is, as the consumer and the transport both see it."""

    #: The handshake arrived; the consumer has not decided yet.
    CONNECTING = "connecting"
    #: Accepted, explicitly or implicitly by a first message; messages flow.
    OPEN = "open"
    #: The server sent its close frame; waiting for the client to go.
    CLOSING = "closing"
    #: Refused before accept; the handshake got an HTTP error (or a policy close).
    REFUSED = "refused"
    #: The client is gone; nothing more goes out.
    CLOSED = "closed"


# -- events: what the consumer (through the runner) and the transport say --------


@dataclass(frozen=True)
class Accept:
    """The consumer accepted, choosing ``subprotocol`` and extra response ``headers``."""

    subprotocol: str | None = None
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True)
class Send:
    """The consumer sends one message (``text`` wins when both are set)."""

    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Close:
    """The consumer closes (before accept: it refuses the handshake)."""

    code: int = CloseCode.NORMAL
    reason: str = ""
    #: Closed by the identity layer (revoked, kicked); the session ends for good.
    revoked: bool = False


@dataclass(frozen=True)
class Refuse:
    """The server refuses on the consumer's behalf (``connect()`` did not decide, a limit).

    ``code`` is what the consumer side reports (1000 for a ``connect()`` that
    returned without accepting, 1008 for a policy refusal).
    """

    code: int = CloseCode.POLICY_VIOLATION
    reason: str = ""


@dataclass(frozen=True)
class Crash:
    """The consumer raised: a refusal with 500 before accept, a 1011 close after."""

    reason: str = ""


@dataclass(frozen=True)
class Shutdown:
    """The transport closes on its own (server shutdown or restart) with ``code``."""

    code: int = CloseCode.GOING_AWAY
    reason: str = ""


@dataclass(frozen=True)
class Disconnected:
    """The client is gone (closed, dropped, or its refused handshake ended)."""

    code: int = CloseCode.ABNORMAL


Event = Accept | Send | Close | Refuse | Crash | Shutdown | Disconnected


# -- outputs: what the transport puts on the wire ------------------------------------


@dataclass(frozen=True)
class Opened:
    """Answer the handshake: 101 (WebSocket) or the session's open answer (long-poll)."""

    subprotocol: str | None = None
    headers: tuple[Header, ...] = ()
    #: A message came before ``accept()`` (Channels 1.x replies, ASGI's implicit accept).
    implicit: bool = False


@dataclass(frozen=True)
class Refused:
    """Answer the handshake with HTTP ``status``; nothing was opened.

    Attributes:
        status: 403 (refused), 500 (the consumer crashed), 503 (shutting down).
        code: the close code the consumer side reports (``disconnect()``,
            the testing Communicator).
        reason: for logs; the wire's text is the transport's.
        crashed: the consumer raised.
        by_server: wsbridge refused on the consumer's behalf (``connect()``
            returned without deciding, an identity or recovery limit).
        revoked: the identity layer closed it before the consumer decided.
    """

    status: int
    code: int
    reason: str = ""
    crashed: bool = False
    by_server: bool = False
    revoked: bool = False

    @property
    def close_code(self) -> int:
        """The code of the close frame sent instead, by a transport past its HTTP answer.

        1011 after a crash; a refusal with 1000 becomes 1008 (a refusal is
        never a normal close); any other code as given.
        """
        if self.crashed:
            return CloseCode.INTERNAL_ERROR
        if self.code == CloseCode.NORMAL:
            return CloseCode.POLICY_VIOLATION  # a refusal is never a normal close
        return self.code


@dataclass(frozen=True)
class Message:
    """One message to the client (``text`` wins when both are set)."""

    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class CloseFrame:
    """Start the closing handshake with ``code`` and ``reason``."""

    code: int
    reason: str = ""
    revoked: bool = False
    crashed: bool = False


Output = Opened | Refused | Message | CloseFrame


# -- the table ------------------------------------------------------------------------


class Wire(enum.Enum):
    """What a transition puts on the wire."""

    NOTHING = "nothing"
    OPEN = "the open answer (101)"  # Opened
    OPEN_AND_SEND = "the open answer, then the message"  # Opened(implicit) + Message
    SEND = "the message"  # Message
    REFUSE = "an HTTP refusal (403, 500, 503)"  # Refused
    CLOSE = "a close frame"  # CloseFrame


S, W = State, Wire
#: ``(state, event type) -> (next state, what goes on the wire)``; a missing pair is
#: a :class:`ContractError`. The docs' diagram and the tests are driven by it.
TRANSITIONS: dict[tuple[State, type], tuple[State, Wire]] = {
    (S.CONNECTING, Accept): (S.OPEN, W.OPEN),
    (S.CONNECTING, Send): (S.OPEN, W.OPEN_AND_SEND),
    (S.CONNECTING, Close): (S.REFUSED, W.REFUSE),
    (S.CONNECTING, Refuse): (S.REFUSED, W.REFUSE),
    (S.CONNECTING, Crash): (S.REFUSED, W.REFUSE),
    (S.CONNECTING, Shutdown): (S.REFUSED, W.REFUSE),
    (S.CONNECTING, Disconnected): (S.CLOSED, W.NOTHING),
    (S.OPEN, Accept): (S.OPEN, W.NOTHING),  # accepted twice: the second is ignored
    (S.OPEN, Send): (S.OPEN, W.SEND),
    (S.OPEN, Close): (S.CLOSING, W.CLOSE),
    (S.OPEN, Crash): (S.CLOSING, W.CLOSE),
    (S.OPEN, Shutdown): (S.CLOSING, W.CLOSE),
    (S.OPEN, Disconnected): (S.CLOSED, W.NOTHING),
}
for _state in (S.CLOSING, S.REFUSED, S.CLOSED):
    # Decided already: late events are dropped, as on a closed socket.
    for _kind in (Accept, Send, Close, Crash, Shutdown):
        TRANSITIONS[(_state, _kind)] = (_state, W.NOTHING)
    TRANSITIONS[(_state, Disconnected)] = (S.CLOSED, W.NOTHING)
del S, W, _state, _kind


def refusal_for(event: Close | Refuse | Crash | Shutdown) -> Refused:
    """The HTTP answer to a handshake that ``event`` ends before accept."""
    if isinstance(event, Crash):
        return Refused(500, CloseCode.INTERNAL_ERROR, event.reason, crashed=True)
    if isinstance(event, Refuse):
        return Refused(403, event.code, event.reason, by_server=True)
    if isinstance(event, Shutdown):
        status = 503 if event.code == CloseCode.GOING_AWAY else 403
        return Refused(status, event.code, event.reason, by_server=True)
    return Refused(403, event.code, event.reason, revoked=event.revoked)


def _close_frame(event: Event) -> CloseFrame:
    if isinstance(event, Crash):
        return CloseFrame(CloseCode.INTERNAL_ERROR, crashed=True)
    if isinstance(event, Close):
        return CloseFrame(event.code, event.reason, revoked=event.revoked)
    assert isinstance(event, Shutdown)  # the table sends nothing else here
    return CloseFrame(event.code, event.reason)


def _outputs(wire: Wire, event: Event) -> tuple[Output, ...]:
    if wire is Wire.NOTHING:
        return ()
    if wire is Wire.SEND:
        assert isinstance(event, Send)
        return (Message(event.text, event.data),)
    if wire is Wire.OPEN:
        assert isinstance(event, Accept)
        return (Opened(event.subprotocol, event.headers),)
    if wire is Wire.OPEN_AND_SEND:
        assert isinstance(event, Send)
        return Opened(implicit=True), Message(event.text, event.data)
    if wire is Wire.REFUSE:
        assert isinstance(event, (Close, Refuse, Crash, Shutdown))
        return (refusal_for(event),)
    return (_close_frame(event),)


class ConnectionContract:
    """One connection's state; :meth:`send` returns what to put on the wire.

    Never blocks, never does I/O: the caller writes the outputs (in order).
    """

    __slots__ = ("state", "refusal", "close_code")

    def __init__(self) -> None:
        self.state = State.CONNECTING
        #: The refusal, once the handshake was refused.
        self.refusal: Refused | None = None
        #: The code of the server's close frame, once one was sent.
        self.close_code: int | None = None

    @property
    def accepted(self) -> bool:
        """The connection was opened (it may be closing or gone since)."""
        return self.close_code is not None or self.state is State.OPEN

    @property
    def decided(self) -> bool:
        """True once accepted, refused or gone; no longer waiting for the consumer."""
        return self.state is not State.CONNECTING

    def send(self, event: Event) -> tuple[Output, ...]:
        """Apply ``event``; return the outputs for the transport, in order.

        Raises:
            ContractError: ``event`` is not allowed in this state (only a
                :class:`Refuse` after the handshake was decided is not).
        """
        try:
            state, wire = TRANSITIONS[(self.state, type(event))]
        except KeyError:
            raise ContractError(
                f"{type(event).__name__} is not allowed in state {self.state.name}"
            ) from None
        self.state = state
        outputs = _outputs(wire, event)
        for output in outputs:
            if isinstance(output, Refused):
                self.refusal = output
            elif isinstance(output, CloseFrame):
                self.close_code = output.code
        return outputs


# -- ASGI-style dicts: the consumer's vocabulary and the testing Communicator's ----------


def _headers(value: Any) -> tuple[Header, ...]:
    if not value:
        return ()
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    return tuple((name, val) for name, val in items)


def from_asgi(event: Mapping[str, Any]) -> Event | None:
    """The contract event for a ``websocket.*`` dict a consumer emitted; None for others."""
    kind = event.get("type")
    if kind == "websocket.send":
        return Send(event.get("text"), event.get("bytes"))
    if kind == "websocket.accept":
        return Accept(event.get("subprotocol"), _headers(event.get("headers")))
    if kind == "websocket.close":
        code = event.get("code")
        return Close(
            CloseCode.NORMAL if code is None else code,
            str(event.get("reason") or ""),
            revoked=bool(event.get("revoked")),
        )
    return None


def to_asgi(output: Output) -> dict[str, Any] | None:
    """The dict a plain ``send`` callable gets for ``output`` (None: nothing to send).

    The testing Communicator shows these: ``"error": True`` marks a crash,
    ``"denied": True`` a refusal wsbridge made on the consumer's behalf,
    ``"revoked": True`` an identity close.
    """
    if isinstance(output, Message):
        if output.text is not None:
            return {"type": "websocket.send", "text": output.text}
        if output.data is not None:
            return {"type": "websocket.send", "bytes": output.data}
        return {"type": "websocket.send"}
    if isinstance(output, Opened):
        if output.implicit:
            return None  # the message that follows says it all
        event: dict[str, Any] = {"type": "websocket.accept", "subprotocol": output.subprotocol}
        if output.headers:
            event["headers"] = list(output.headers)
        return event
    if isinstance(output, Refused):
        event = {"type": "websocket.close", "code": int(output.code)}
        if output.reason and not output.by_server:
            event["reason"] = output.reason
        if output.crashed:
            event["error"] = True
        elif output.by_server:
            event["denied"] = True
        if output.revoked:
            event["revoked"] = True
        return event
    event = {"type": "websocket.close", "code": int(output.code)}
    if output.reason:
        event["reason"] = output.reason
    if output.revoked:
        event["revoked"] = True
    if output.crashed:
        event["error"] = True
    return event
