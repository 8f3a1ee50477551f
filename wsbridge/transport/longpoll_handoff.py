"""Long-poll sessions that survive a graceful restart: hand-off and adoption over the layer.

A WebSocket cannot outlive its process; a long-poll session can, because
each request is separate. When a process goes away gracefully (gunicorn
reload, rolling deploy, SIGTERM to ``wsbridge serve``) with a shared layer:

1. new opens are answered 503 (the client opens again elsewhere);
2. each session's consumer gets ``websocket.disconnect`` with 1012 (it
   leaves its groups and cleans up as on any disconnect), then the session
   (token binding, both sequence counters, the unacked frames, the scope
   in msgpack types) goes to the layer channel ``wsbridge.lp.handoff.<sid>``
   (:class:`~wsbridge.protocol.longpoll.HandOff`); it waits there for the
   layer's ``expiry``;
3. a held poll is answered with what is unacked (usually nothing): no close
   frame, the client simply polls again;
4. the process tells its peers (group ``wsbridge.lp.peers``) it is gone.

The next request for the session that reaches a live process finds its
owner gone (told so, answered "moved", or silent) and takes the hand-off
(``receive`` pops it: one process wins). That process *adopts* the session:
a new consumer instance gets ``websocket.connect`` with the same scope plus
``scope["resumed"] = True``, the unacked frames are delivered again with
their sequence numbers, and every answer carries a new ``token`` naming
the adopter, which the client uses from then on. The adopter joins the
group ``wsbridge.lp.s.<sid>`` so a request carrying an older token that
reaches a third process still finds it. See ``docs/topics/protocol.rst``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.pool import Pool

from ..consumers.runner import Connection
from ..exceptions import LayerError
from ..layers.base import validate_message
from ..protocol.envelope import CLOSE_SERVICE_RESTART
from ..protocol.longpoll import (
    MAX_SESSION_MACS,
    HandOff,
    LongPollSession,
    SessionState,
    Token,
    TokenSigner,
    handoff_channel,
    session_group,
)

if TYPE_CHECKING:
    from ..consumers.routing import Router
    from ..layers.base import BaseChannelLayer
    from .longpoll_relay import Relay, Request

__all__ = ["Session", "HandOffMixin", "scope_to_message", "scope_from_message"]

logger = logging.getLogger("wsbridge.transport.longpoll")

#: Sessions handed off at the same time by a process going away.
HANDOFF_CONCURRENCY = 16

Answer = tuple[int, dict[str, Any]]


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
    refusal: int = 403
    accepted: bool = False
    #: Adopted from another process (its consumer's connect is a resume).
    resumed: bool = False
    #: Set while the session is being handed off (requests wait for it).
    moving: Event | None = None
    poller: AsyncResult | None = None
    lock: Semaphore = field(default_factory=Semaphore)

    def wake(self, why: str = "ready") -> None:
        if self.poller is not None and not self.poller.ready():
            self.poller.set(why)


def scope_to_message(scope: dict[str, Any]) -> dict[str, Any]:
    """The scope's msgpack-typed keys; others (a ``user`` object, a session store) are dropped.

    The adopting process rebuilds what was dropped the usual way (the Django
    integration reads ``session`` and ``user`` from the cookies again).
    """
    kept: dict[str, Any] = {}
    for key, value in scope.items():
        if key == "url_route":  # routed again by the adopter
            continue
        try:
            kept[key] = validate_message({key: value})[key]
        except TypeError:
            logger.debug("scope[%r] is not a msgpack type: not handed over", key)
    return kept


def scope_from_message(data: dict[str, Any]) -> dict[str, Any]:
    """The scope handed over, with ``headers`` as ``(name, value)`` tuples again."""
    scope = dict(data)
    headers = scope.get("headers")
    if isinstance(headers, list):
        scope["headers"] = [tuple(pair) for pair in headers if isinstance(pair, list)]
    return scope


class HandOffMixin:
    """The hand-off half of :class:`~wsbridge.transport.longpoll.LongPollTransport`."""

    # Provided by LongPollTransport.
    options: Any
    layer: BaseChannelLayer | None
    owner: str
    sessions: dict[bytes, Session]
    _moved: OrderedDict[bytes, float]
    _adopting: dict[bytes, Event]
    _leaving: bool
    _started: bool
    _relay: Relay | None
    _signer: TokenSigner | None
    _router: Router | None

    if TYPE_CHECKING:

        def _emit(self, session: Session, event: dict[str, Any]) -> None: ...
        def _end(self, session: Session, *, code: int | None) -> None: ...
        def _forget(self, session: Session, *, moved: bool = False) -> None: ...
        def _run_local(self, token: Token, request: Request) -> Answer: ...
        def close_sessions(self, code: int = 1001, reason: str = "") -> int: ...

    # -- policy -------------------------------------------------------------------------

    def can_hand_off(self) -> bool:
        """True when sessions move to another process on shutdown instead of closing.

        The ``handoff`` option, or by default: the layer is shared (with the
        in-memory layer there is no other process to take them).
        """
        from ..layers.memory import MemoryLayer

        if self.options.handoff is not None:
            return bool(self.options.handoff)
        return self.layer is not None and not isinstance(self.layer, MemoryLayer)

    def _check_handoff_expiry(self) -> None:
        expiry = getattr(self.layer, "expiry", None)
        if self.can_hand_off() and expiry is not None and expiry < self.options.session_timeout:
            logger.warning(
                "the layer's expiry (%ss) is shorter than the long-poll session_timeout (%ss): "
                "a session handed off at a restart is lost if its client takes longer than "
                "that to come back; raise the layer's expiry",
                expiry,
                self.options.session_timeout,
            )

    def _set_token(self, session: Session, token: str) -> None:
        session.token = token
        parsed = TokenSigner.parse(token)
        pair = (parsed.owner, parsed.mac)
        session.known = [pair, *(p for p in session.known if p != pair)][:MAX_SESSION_MACS]

    # -- the process going away ------------------------------------------------------

    def release_sessions(
        self,
        code: int = CLOSE_SERVICE_RESTART,
        reason: str = "service restart",
        *,
        timeout: float = 5.0,
    ) -> int:
        """For a graceful restart: hand every session over, or close them with ``code``.

        With a shared layer (:meth:`can_hand_off`) the sessions survive: see
        :meth:`hand_off_sessions`. Otherwise (one process, in-memory layer)
        each gets a close frame with ``code`` in answer to its pending poll
        and the client opens a new session.

        Returns:
            How many sessions were handed over or closed.
        """
        if not self._started:
            return 0
        if self.can_hand_off():
            return self.hand_off_sessions(timeout)
        return self.close_sessions(code, reason)

    def hand_off_sessions(self, timeout: float = 5.0) -> int:
        """Hand every session to the layer for another process to adopt; returns how many.

        The consumers get ``websocket.disconnect`` (1012) and up to
        ``timeout`` seconds to finish; a session that cannot be handed over
        (the layer refuses the message) is closed with 1012 instead. New
        opens are refused with 503 from now on.
        """
        self._leaving = True
        deadline = time.monotonic() + timeout
        # Bounded concurrency: each hand-off (and the consumer's own disconnect) uses the
        # layer, whose connection pool is bounded too (redis-py: 100 per process).
        pool = Pool(HANDOFF_CONCURRENCY)
        jobs, late = [], []
        for session in list(self.sessions.values()):
            if time.monotonic() < deadline:
                jobs.append(pool.spawn(self._hand_off, session, deadline))
            else:
                late.append(session)
        pool.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        for session in late:  # out of time: closed, as without a shared layer
            if session.state.state is SessionState.OPEN:
                self._emit(
                    session,
                    {
                        "type": "websocket.close",
                        "code": CLOSE_SERVICE_RESTART,
                        "reason": "service restart",
                    },
                )
        moved = sum(1 for job in jobs if job.value)
        if self._relay is not None:
            self._relay.depart()
        logger.info("restart: %d long-poll session(s) handed over to the other processes", moved)
        return moved

    def _hand_off(self, session: Session, deadline: float) -> bool:
        state = session.state
        if state.state is SessionState.CONNECTING:  # no token yet: the open is answered 503
            session.refusal = 503
            state.refuse(503)
            self._end(session, code=CLOSE_SERVICE_RESTART)
            return False
        if state.state not in (SessionState.OPEN, SessionState.CLOSING):
            return False
        session.moving = Event()
        try:
            # Sends being applied finish first: what the client was told is acked is applied.
            locked = session.lock.acquire(timeout=max(0.1, deadline - time.monotonic()))
            try:
                return self._hand_off_locked(session, deadline)
            finally:
                if locked:
                    session.lock.release()
        finally:
            session.moving.set()

    def _hand_off_locked(self, session: Session, deadline: float) -> bool:
        state = session.state
        conn = session.conn
        if conn is not None and not conn.finished.is_set():
            conn.disconnected(CLOSE_SERVICE_RESTART)
            if not conn.finished.wait(max(0.1, deadline - time.monotonic())):
                conn.abort()
        if state.state not in (SessionState.OPEN, SessionState.CLOSING):
            return False  # closed by the client meanwhile
        handoff = HandOff(
            state.sid,
            session.origin,
            session.user,
            tuple(mac for _, mac in session.known),
            scope_to_message(session.scope),
            state.snapshot(),
            source=self.owner,
            owners=tuple(owner for owner, _ in session.known),
        )
        try:
            assert self.layer is not None
            self.layer.send(handoff_channel(state.sid), handoff.to_message())
        except (LayerError, TypeError, ValueError) as exc:
            logger.warning("long-poll session not handed over (%s): closing it with 1012", exc)
            if state.queue_close(CLOSE_SERVICE_RESTART, "service restart") is not None:
                session.wake()
            return False
        state.hand_off()
        self._forget(session, moved=True)
        session.wake("moved")
        return True

    # -- the process taking over -----------------------------------------------------

    def _adopt_and_run(self, token: Token, request: Request, wait: float) -> Answer | None:
        """Adopt ``token``'s session if it waits in the layer, then run ``request``; else None."""
        if self._adopt(token.sid, wait) is None:
            return None
        return self._run_local(token, request)

    def _adopt(self, sid: bytes, wait: float) -> Session | None:
        if self._leaving or not self.can_hand_off():
            return None
        if sid in self.sessions:
            return self.sessions[sid]
        busy = self._adopting.get(sid)
        if busy is not None:  # another request of this session is adopting it now
            busy.wait(wait + self.options.handshake_timeout)
            return self.sessions.get(sid)
        done = self._adopting[sid] = Event()
        try:
            assert self.layer is not None
            message = self.layer.receive(handoff_channel(sid), timeout=wait)
            if message is None:
                return None
            try:
                handoff = HandOff.from_message(message)
            except ValueError as exc:
                logger.warning("long-poll hand-off dropped: %s", exc)
                return None
            try:
                return self._resume(handoff)
            except Exception:  # a bug, or the layer failing here: leave it for another try
                logger.exception("adopting a long-poll session failed; handing it back")
                self.sessions.pop(sid, None)
                try:
                    self.layer.send(handoff_channel(sid), message)
                except LayerError:
                    logger.warning("long-poll session lost: cannot hand it back to the layer")
                return None
        finally:
            done.set()
            del self._adopting[sid]

    def _resume(self, handoff: HandOff) -> Session:
        opts = self.options
        state = LongPollSession.restore(
            handoff.sid,
            handoff.session,
            now=time.monotonic(),
            timeout=opts.session_timeout,
            max_buffer=opts.max_buffer,
            max_buffer_bytes=opts.max_buffer_bytes,
        )
        scope = scope_from_message(handoff.scope)
        scope["resumed"] = True
        session = Session(
            state,
            origin=handoff.origin,
            user=handoff.user,
            known=handoff.known(),
            scope=scope,
            resumed=True,
            accepted=False,
        )
        assert self._signer is not None and self._router is not None
        self._set_token(
            session,
            self._signer.sign(state.sid, self.owner, origin=handoff.origin, user=handoff.user),
        )
        self.sessions[state.sid] = session
        self._moved.pop(state.sid, None)
        self._join_session_group(state.sid)
        logger.debug("long-poll session adopted from %s", handoff.source)
        if state.state is not SessionState.OPEN:
            return session  # only its close frame is left to deliver: no consumer
        match = self._router.resolve("websocket", str(scope.get("path", "")))
        if match is None:
            state.queue_close(1011, "no consumer is routed at this path any more")
            return session
        scope["url_route"] = match.url_route
        session.conn = Connection(
            scope, match.consumer, self.layer, lambda event: self._emit(session, event)
        )
        session.conn.push({"type": "websocket.connect"})
        if not session.handshake.wait(opts.handshake_timeout):
            logger.warning("adopted long-poll session: the consumer did not accept in time")
            self._end(session, code=1006)
        return session

    def _join_session_group(self, sid: bytes) -> None:
        try:
            assert self.layer is not None
            self.layer.group_add(session_group(sid), self.owner)
        except LayerError as exc:  # only requests with an older token miss it
            logger.warning("adopted long-poll session not announced: %s", exc)

    def _leave_session_group(self, sid: bytes) -> None:
        def leave() -> None:
            try:
                assert self.layer is not None
                self.layer.group_discard(session_group(sid), self.owner)
            except LayerError:  # the membership expires with the layer's group_expiry
                logger.debug("could not leave the group of an adopted session", exc_info=True)

        gevent.spawn(leave)
