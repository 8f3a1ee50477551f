"""Long-poll sessions that survive a graceful restart: hand-off and adoption over the layer.

A WebSocket cannot outlive its process; a long-poll session can, because
each request is separate. When a process goes away gracefully (gunicorn
reload, rolling deploy, SIGTERM to ``wsbridge serve``) with a shared layer:

1. new opens are answered 503 (the client opens again elsewhere);
2. each session's consumer gets ``websocket.disconnect`` with 1012 (it
   leaves its groups and cleans up as on any disconnect), then the session
   (token binding, both sequence counters, the unacked frames, the scope
   in msgpack types) goes to the layer channel ``wsbridge.lp.handoff.<sid>``
   (:class:`~wsbridge.protocol.longpoll_messages.HandOff`); it waits there for the
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
from typing import Any

from gevent.event import Event
from gevent.pool import Pool

from ...consumers.routing import Router
from ...exceptions import LayerError, LayerUnavailable
from ...layers.base import BaseChannelLayer, validate_message
from ...logs import CountedWarning
from ...protocol.closecodes import CloseCode
from ...protocol.longpoll import LongPollSession, SessionState
from ...protocol.longpoll_messages import HandOff, handoff_channel, session_group
from ...protocol.longpoll_token import TokenSigner
from ...protocol.recovery import POSITIONS
from .checkpoint import CheckpointStore
from .consumer import ConsumerSide
from .options import LongPollOptions
from .sessions import Session, SessionTable

__all__ = [
    "SessionMover",
    "session_handoff",
    "scope_to_message",
    "scope_from_message",
    "HANDOFF_CONCURRENCY",
]

logger = logging.getLogger("wsbridge.transport.longpoll")

#: Sessions handed off at the same time by a process going away.
HANDOFF_CONCURRENCY = 16
#: Seconds a running lease of another process is taken as still running.
ALIVE_CACHE = 1.0


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


def session_handoff(session: Session, source: str, *, cached_scope: bool = False) -> HandOff:
    """``session`` as a hand-off from ``source``: what moves, on a restart or in a checkpoint.

    With ``cached_scope`` the scope is reduced to msgpack types once per
    session (checkpoints are written often; a restart's hand-off takes it fresh).
    """
    state = session.state
    if not cached_scope:
        scope = scope_to_message(session.scope)
    elif session.scope_message is None:
        scope = session.scope_message = scope_to_message(session.scope)
    else:
        scope = session.scope_message
    if cached_scope:
        # The positions of what was sent change with every stamped frame: a
        # frozen copy would have the adopter recover from the first open's
        # and miss what the group sent between that checkpoint and the crash.
        positions = session.scope.get(POSITIONS)
        if isinstance(positions, dict):
            scope = {**scope, POSITIONS: dict(positions)}
    return HandOff(
        state.sid,
        session.origin,
        session.user,
        tuple(mac for _, mac in session.known),
        scope,
        state.snapshot(),
        source=source,
        owners=tuple(owner for owner, _ in session.known),
    )


class SessionMover:
    """Hands this process's sessions over when it goes away; adopts those others handed over.

    Args:
        options: the transport's settings (timeouts, buffer limits, ``handoff``).
        layer: the channel layer; sessions move only when it is shared
            across processes (``"shared" in layer.extensions``), unless
            ``options.handoff`` says otherwise.
        owner: this process's owner channel (adopted sessions' tokens name it).
        table: the sessions held by this process.
        consumers: starts and ends the sessions' consumers.
        signer: signs the adopted sessions' new tokens.
        router: routes an adopted session's path to its consumer again.
        store: the layer's checkpoints (``"checkpoints"`` in its
            extensions), from which sessions of a crashed process are
            adopted; None: only hand-offs move sessions.
        ttl: seconds a checkpoint lasts unless written again.
    """

    def __init__(
        self,
        options: LongPollOptions,
        layer: BaseChannelLayer,
        owner: str,
        table: SessionTable,
        consumers: ConsumerSide,
        signer: TokenSigner,
        router: Router,
        store: CheckpointStore | None = None,
        ttl: float = 120.0,
    ) -> None:
        self.options = options
        self.store = store
        self.ttl = ttl
        #: Sessions adopted here from a crashed process's checkpoints.
        self.crash_adoptions = 0
        self._adopted_warning = CountedWarning(
            logger,
            "long-poll session adopted from %s, whose process stopped renewing its lease "
            "(it crashed or stalled); its unacked messages are delivered again",
        )
        self._alive_seen: dict[str, float] = {}  # owner -> when its lease was seen running
        self.layer = layer
        self.owner = owner
        self.table = table
        self.consumers = consumers
        self.signer = signer
        self.router = router
        #: Sessions move to another process on shutdown instead of closing.
        self.enabled = (
            bool(options.handoff) if options.handoff is not None else "shared" in layer.extensions
        )
        #: Handing over: new opens are refused (503), nothing is adopted.
        self.leaving = False
        self._adopting: dict[bytes, Event] = {}

    def check_expiry(self) -> None:
        """Warn when a handed-off session could expire in the layer before its client is back."""
        expiry = getattr(self.layer, "expiry", None)
        if self.enabled and expiry is not None and expiry < self.options.session_timeout:
            logger.warning(
                "the layer's expiry (%ss) is shorter than the long-poll session_timeout (%ss): "
                "a session handed off at a restart is lost if its client takes longer than "
                "that to come back; raise the layer's expiry",
                expiry,
                self.options.session_timeout,
            )

    # -- the process going away ------------------------------------------------------

    def hand_off_all(self, timeout: float) -> int:
        """Hand every session to the layer for another process to adopt; returns how many.

        The consumers get ``websocket.disconnect`` (1012) and up to
        ``timeout`` seconds to finish; a session that cannot be handed over
        (the layer refuses the message, or time ran out) is closed with 1012
        instead. New opens are refused with 503 from now on.
        """
        self.leaving = True
        deadline = time.monotonic() + timeout
        # Bounded concurrency: each hand-off (and the consumer's own disconnect) uses the
        # layer, whose connection pool is bounded too (redis-py: 100 per process).
        pool = Pool(HANDOFF_CONCURRENCY)
        jobs, late = [], []
        for session in self.table.sessions():
            if time.monotonic() < deadline:
                jobs.append(pool.spawn(self._hand_off, session, deadline))
            else:
                late.append(session)
        pool.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        for session in late:  # out of time: closed, as without a shared layer
            if session.state.state is SessionState.OPEN:
                self.consumers.close(session, CloseCode.SERVICE_RESTART, "service restart")
        moved = sum(1 for job in jobs if job.value)
        logger.info("restart: %d long-poll session(s) handed over to the other processes", moved)
        return moved

    def _hand_off(self, session: Session, deadline: float) -> bool:
        state = session.state
        if state.state is SessionState.CONNECTING:  # no token yet: the open is answered 503
            session.refusal = 503
            state.refuse(503)
            self.consumers.end(session, code=CloseCode.SERVICE_RESTART)
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
            conn.disconnected(CloseCode.SERVICE_RESTART)
            if not conn.finished.wait(max(0.1, deadline - time.monotonic())):
                conn.abort()
        if state.state not in (SessionState.OPEN, SessionState.CLOSING):
            return False  # closed by the client meanwhile
        handoff = session_handoff(session, self.owner)
        try:
            self.layer.send(handoff_channel(state.sid), handoff.to_message())
        except (LayerError, TypeError, ValueError) as exc:
            logger.warning("long-poll session not handed over (%s): closing it with 1012", exc)
            if state.queue_close(CloseCode.SERVICE_RESTART, "service restart") is not None:
                session.wake()
            return False
        state.hand_off()
        self.consumers.forget(session, moved=True)
        session.wake("moved")
        return True

    # -- the process taking over -----------------------------------------------------

    def adopt(self, sid: bytes, wait: float) -> Session | None:
        """Take session ``sid`` from the layer if it waits there (up to ``wait`` seconds).

        Returns:
            The session, now held here (its consumer started), or None: not
            handed over, taken by another process, or this process is leaving.
        """
        if self.leaving or not self.enabled:
            return None
        session = self.table.get(sid)
        if session is not None:
            return session
        busy = self._adopting.get(sid)
        if busy is not None:  # another request of this session is adopting it now
            busy.wait(wait + self.options.handshake_timeout)
            return self.table.get(sid)
        done = self._adopting[sid] = Event()
        try:
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
                self.table.held.pop(sid, None)
                try:
                    self.layer.send(handoff_channel(sid), message)
                except LayerError:
                    logger.warning("long-poll session lost: cannot hand it back to the layer")
                return None
        finally:
            done.set()
            del self._adopting[sid]

    def owner_dead(self, owner: str) -> bool:
        """True when ``owner``'s process lease has ended (a crash): adopt without asking it.

        A running lease is remembered for a second, so the requests this
        process forwards cost one lookup per owner per second, not one each.
        """
        store = self.store
        if store is None or self.leaving:
            return False
        now = time.monotonic()
        if now - self._alive_seen.get(owner, -ALIVE_CACHE) < ALIVE_CACHE:
            return False
        try:
            alive = store.alive(owner)
        except LayerUnavailable:
            return False
        if alive:
            if len(self._alive_seen) > 10_000:
                self._alive_seen.clear()
            self._alive_seen[owner] = now
        return not alive

    def adopt_crashed(self, sid: bytes) -> tuple[Session | None, bool]:
        """Take session ``sid`` from its checkpoint if the process holding it has died.

        A process is dead once its lease in the layer has ended (it renews
        it every ``lease / 3`` s), so this waits for no one: it answers at once.

        Returns:
            ``(session, False)`` adopted (or already held here);
            ``(None, True)`` not now: its holder still holds its lease (it
            may be stalled, or dying), another process took it a moment
            ago, or the layer is down (the client retries: 503);
            ``(None, False)`` no checkpoint (the client opens a new session).
        """
        store = self.store
        if store is None or self.leaving:
            return None, False
        session = self.table.get(sid)
        if session is not None:
            return session, False
        busy = self._adopting.get(sid)
        if busy is not None:  # another request of this session is adopting it now
            busy.wait(self.options.handshake_timeout + 1.0)
            session = self.table.get(sid)
            return session, session is None
        done = self._adopting[sid] = Event()
        try:
            return self._take_crashed(store, sid)
        except LayerUnavailable as exc:
            logger.warning("long-poll session not adopted now (%s): the client retries", exc)
            return None, True
        finally:
            done.set()
            del self._adopting[sid]

    def _take_crashed(self, store: CheckpointStore, sid: bytes) -> tuple[Session | None, bool]:
        key = sid.hex()
        holder = store.owner(key)
        if holder is None or holder == self.owner:
            return None, False  # none, or ended here (its copy not deleted yet)
        if store.alive(holder):
            return None, True
        message = store.take(key, holder, self.owner, self.ttl)
        if message is None:
            return None, True  # taken by another process just now: it answers the retry
        try:
            handoff = HandOff.from_message(message)
        except ValueError as exc:
            logger.warning("long-poll checkpoint dropped: %s", exc)
            return None, False
        session = self._resume(handoff)
        self.crash_adoptions = self._adopted_warning(holder)
        return session, False

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
        )
        token = self.signer.sign(state.sid, self.owner, origin=handoff.origin, user=handoff.user)
        session.use_token(token)
        self.table.add(session)
        self._join_session_group(state.sid)
        logger.debug("long-poll session adopted from %s", handoff.source)
        if state.state is not SessionState.OPEN:
            return session  # only its close frame is left to deliver: no consumer
        match = self.router.resolve("websocket", str(scope.get("path", "")))
        if match is None:
            gone = "no consumer is routed at this path any more"
            state.queue_close(CloseCode.INTERNAL_ERROR, gone)
            return session
        scope["url_route"] = match.url_route
        self.consumers.start(session, match.consumer)
        if not session.handshake.wait(opts.handshake_timeout):
            logger.warning("adopted long-poll session: the consumer did not accept in time")
            self.consumers.end(session, code=CloseCode.ABNORMAL)
        return session

    def _join_session_group(self, sid: bytes) -> None:
        try:
            self.layer.group_add(session_group(sid), self.owner)
        except LayerError as exc:  # only requests with an older token miss it
            logger.warning("adopted long-poll session not announced: %s", exc)
