"""The sessions one process holds (:class:`SessionTable`), each a :class:`Session`.

A :class:`Session` is the sans-I/O
:class:`~wsbridge.protocol.longpoll.LongPollSession` plus its I/O parts: the
consumer's connection, the held poll, the handshake event, the lock that keeps
a session's sends in order. The table also remembers, for a while, the
sessions this process no longer holds and why (closed, handed over,
revoked), so that a late request gets the right answer: ``410`` for a
session that ended here, ``404`` for one never seen, a look for its adopter
for one handed over.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

from ... import admission
from ...consumers.runner import Connection
from ...exceptions import Gone, HTTPError, NotFound
from ...protocol.longpoll import LongPollSession
from ...protocol.longpoll_messages import MAX_SESSION_MACS
from ...protocol.longpoll_token import TokenSigner

__all__ = ["Session", "SessionTable", "REMEMBERED"]

#: Ended, moved and revoked sessions remembered (each table), oldest forgotten first.
REMEMBERED = 100_000


@dataclass
class Session:
    """One long-poll session held by this process: protocol state plus its I/O parts."""

    state: LongPollSession
    conn: Connection | None = None
    #: What its tokens are bound to, and the ``(owner, mac)`` of each token it answers to
    #: (newest first): a token must match both parts of one of them.
    origin: str = ""
    user: str = ""
    token: str = ""
    known: list[tuple[str, bytes]] = field(default_factory=list)
    scope: dict[str, Any] = field(default_factory=dict)
    handshake: Event = field(default_factory=Event)
    #: The accept / refuse / send / close rules for its consumer (a new one per consumer).
    refusal: int = 403
    #: Adopted from another process (its consumer's connect is a resume).
    resumed: bool = False
    #: Set while the session is being handed off (requests wait for it).
    moving: Event | None = None
    poller: AsyncResult | None = None
    lock: Semaphore = field(default_factory=Semaphore)
    #: The scope as msgpack types, made once for its checkpoints (checkpoint.py).
    scope_message: dict[str, Any] | None = None

    def wake(self, why: str = "ready") -> None:
        """Answer the held poll, if any: ``ready``, ``superseded``, ``gone`` or ``moved``."""
        if self.poller is not None and not self.poller.ready():
            self.poller.set(why)

    def use_token(self, token: str) -> None:
        """Answer with ``token`` from now on; older tokens of the session are still known."""
        self.token = token
        parsed = TokenSigner.parse(token)
        pair = (parsed.owner, parsed.mac)
        self.known = [pair, *(p for p in self.known if p != pair)][:MAX_SESSION_MACS]


def _remember(table: OrderedDict[bytes, Any], sid: bytes, value: Any) -> None:
    table[sid] = value
    while len(table) > REMEMBERED:
        table.popitem(last=False)


class SessionTable:
    """The sessions this process holds, by session id, and those it held lately."""

    def __init__(self) -> None:
        #: The sessions held now (read by the tests and the status gauges).
        self.held: dict[bytes, Session] = {}
        #: Session id -> when it ended here (closed, refused, expired).
        self.tombstones: OrderedDict[bytes, float] = OrderedDict()
        #: Session id -> when it was handed over to another process.
        self.moved: OrderedDict[bytes, float] = OrderedDict()
        self._revoked: OrderedDict[bytes, str] = OrderedDict()  # sid -> why (410 body)
        self._admitted: dict[bytes, str] = {}  # sid -> client IP counted by admission

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, sid: bytes) -> bool:
        return sid in self.held

    def get(self, sid: bytes) -> Session | None:
        return self.held.get(sid)

    def sessions(self) -> list[Session]:
        """The sessions held now (a copy: callers end sessions while they go through it)."""
        return list(self.held.values())

    def add(self, session: Session, *, ip: str | None = None) -> None:
        """Hold ``session``; ``ip`` is the client's admission slot, released when it ends."""
        sid = session.state.sid
        self.held[sid] = session
        self.moved.pop(sid, None)
        if ip is not None:
            self._admitted[sid] = ip

    def remove(self, session: Session, *, moved: bool = False) -> bool:
        """Stop holding ``session`` (ended, or handed over when ``moved``); True if it was held."""
        sid = session.state.sid
        ip = self._admitted.pop(sid, None)
        if ip is not None:
            admission.current().release(ip)
        if self.held.get(sid) is not session:
            return False
        del self.held[sid]
        _remember(self.moved if moved else self.tombstones, sid, time.monotonic())
        return True

    def revoke(self, sid: bytes, why: str) -> None:
        """Remember that ``sid`` was revoked: its later requests get 410 with ``why``."""
        _remember(self._revoked, sid, why)

    def revoked(self, sid: bytes) -> str | None:
        return self._revoked.get(sid)

    def was_moved(self, sid: bytes) -> bool:
        """True when this process handed ``sid`` over (its adopter may be asked)."""
        return sid in self.moved

    def missing(self, sid: bytes, *, signed_here: bool) -> HTTPError:
        """The error for a request naming a session this process does not hold.

        Args:
            sid: the session id.
            signed_here: the token names this process (a session that ended
                here is then ``410``, not ``404``).
        """
        why = self._revoked.get(sid)
        if why is not None:
            return Gone(why)
        if signed_here and sid in self.tombstones:
            return Gone("session closed or expired")
        return NotFound("unknown session")

    def expired(self, now: float) -> list[Session]:
        """The sessions silent for longer than their timeout at ``now``."""
        return [session for session in self.held.values() if session.state.expired(now)]

    def prune(self, now: float, keep: float) -> None:
        """Forget the ended and moved sessions older than ``keep`` seconds."""
        for table in (self.tombstones, self.moved):
            while table:
                sid, when = next(iter(table.items()))
                if now - when < keep:
                    break
                del table[sid]
