"""The client's half of a long-poll session, sans-I/O: request bodies in, answers in, frames out.

:class:`ClientSession` knows what to put in each request (``open``,
``poll`` with its ``ack``, ``send`` with numbered messages, ``close``) and
what each answer means; the caller does the HTTP (any library, any
concurrency model) and the retrying. It follows ``docs/topics/protocol.rst``
exactly, hand-offs included: an answer carrying a new ``token`` replaces
the old one. ``wsbridge.testing.LongPollClient`` is built on it::

    session = ClientSession()
    status, body = post("open", session.open_body("/ws/echo/"))
    session.open_answered(status, body)
    session.queue(text="hi")
    status, body = post("send", session.send_body())
    session.send_answered(status, body)
    status, body = post("poll", session.poll_body())
    for frame in session.poll_answered(status, body):
        ...

Errors are :class:`~wsbridge.exceptions.HTTPError` with the answer's
``status`` and ``reason``: :func:`is_transient` says which ones to retry
(with backoff); 404 and 410 mean the session is gone (open a new one).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..exceptions import ConnectionClosed, HTTPError
from .closecodes import CloseCode
from .envelope import Frame, decode_frame, encode_frame

__all__ = ["ClientSession", "is_transient", "MAX_BATCH"]

#: Messages per send request (the server accepts up to 10,000).
MAX_BATCH = 100


def is_transient(status: int) -> bool:
    """True for answers worth retrying with backoff: 502, 503, 504.

    503 is a process that is overloaded, restarting or cut off from the
    layer; 502/504 come from proxies. A 500 is a bug on the server: retrying
    would not help.
    """
    return status in (502, 503, 504)


def _error(status: int, body: Any) -> HTTPError:
    reason = body.get("error", "") if isinstance(body, dict) else str(body)
    return HTTPError(f"{status}: {reason}", status=status)


class ClientSession:
    """What a long-poll client must remember: the token, what it has seen, what it has sent.

    Attributes:
        token: the current session token (None before open). An answer
            that carries ``token`` replaces it (the session moved to
            another server process).
        seen: the highest server ``seq`` received (what a poll acks).
        sent: the highest client ``seq`` given to a message.
        closed: ``(code, reason)`` once the server's close frame arrived
            or :meth:`close_body` was called.
    """

    def __init__(self) -> None:
        self.token: str | None = None
        self.seen = 0
        self.sent = 0
        self.subprotocol: str | None = None
        self.poll_timeout = 25.0
        self.session_timeout = 60.0
        self.closed: tuple[int, str] | None = None
        self._outbox: deque[Frame] = deque()
        self._inflight: list[Frame] = []

    # -- open ---------------------------------------------------------------------

    @staticmethod
    def open_body(path: str, subprotocols: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """The body of ``POST {prefix}/open`` for the consumer routed at ``path``."""
        return {"path": path, "subprotocols": list(subprotocols)}

    def open_answered(self, status: int, body: Any) -> None:
        """Take the open answer; then poll and send.

        Raises:
            HTTPError: refused (403), no route (404), the consumer crashed
                (500) or did not answer (504); retry only if :func:`is_transient`.
        """
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise _error(status, body)
        self.token = body["token"]
        self.subprotocol = body.get("subprotocol")
        self.poll_timeout = float(body.get("poll_timeout") or self.poll_timeout)
        self.session_timeout = float(body.get("session_timeout") or self.session_timeout)

    def _refresh(self, body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("token"), str):
            self.token = body["token"]

    # -- poll ---------------------------------------------------------------------

    def poll_body(self, wait: float | None = None) -> dict[str, Any]:
        """The body of a poll acking everything seen; ``wait`` caps how long it is held."""
        body: dict[str, Any] = {"token": self.token, "ack": self.seen}
        if wait is not None:
            body["wait"] = max(0.0, float(wait))
        return body

    def poll_answered(self, status: int, body: Any) -> list[Frame]:
        """The new frames of a poll answer, in order (a resend's old ones are dropped).

        A close frame is the last one returned; ``closed`` is set and
        the session is over (send :meth:`poll_body` once more to ack it, if
        you like: the answer is 410). A 409 (a newer poll took over) returns
        nothing.

        Raises:
            HTTPError: any other answer than 200 or 409.
        """
        if status == 409:
            return []
        if status != 200 or not isinstance(body, dict):
            raise _error(status, body)
        self._refresh(body)
        fresh = []
        for item in body.get("messages") or []:
            frame = decode_frame(item, where="server message", allow_close=True)
            if frame.seq <= self.seen:
                continue  # delivered before: that answer was a resend
            if frame.seq != self.seen + 1:
                raise HTTPError(f"server message seq {frame.seq} after {self.seen}", status=502)
            self.seen = frame.seq
            fresh.append(frame)
            if frame.is_close:
                self.closed = (frame.close or CloseCode.ABNORMAL, frame.reason)
                break
        return fresh

    # -- send ---------------------------------------------------------------------

    def queue(self, text: str | None = None, data: bytes | None = None) -> int:
        """Number one message for sending; returns its ``seq``.

        Raises:
            ConnectionClosed: the session is over.
        """
        if self.closed is not None:
            raise ConnectionClosed(*self.closed)
        if (text is None) == (data is None):
            raise TypeError("queue() takes exactly one of text or data")
        self.sent += 1
        self._outbox.append(Frame(self.sent, text=text, data=data))
        return self.sent

    @property
    def unsent(self) -> int:
        """Messages not confirmed by the server yet."""
        return len(self._inflight) + len(self._outbox)

    def send_body(self) -> dict[str, Any] | None:
        """The next send request: the unconfirmed messages (a retry resends them); None if none."""
        while self._outbox and len(self._inflight) < MAX_BATCH:
            self._inflight.append(self._outbox.popleft())
        if not self._inflight:
            return None
        return {"token": self.token, "messages": [encode_frame(f) for f in self._inflight]}

    def send_answered(self, status: int, body: Any) -> None:
        """Take a send answer: forget what it acks; retry the rest with :meth:`send_body`.

        Raises:
            HTTPError: not 200 (retry only if :func:`is_transient`).
        """
        if status != 200 or not isinstance(body, dict) or type(body.get("ack")) is not int:
            raise _error(status, body)
        self._refresh(body)
        ack = body["ack"]
        self._inflight = [frame for frame in self._inflight if frame.seq > ack]

    # -- close --------------------------------------------------------------------

    def close_body(self, code: int = CloseCode.NORMAL, reason: str = "") -> dict[str, Any]:
        """The body of ``POST {prefix}/close``; the session is over on this side."""
        if self.closed is None:
            self.closed = (code, reason)
        return {"token": self.token, "code": code, "reason": reason}
