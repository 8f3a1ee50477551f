"""Everything long-poll holds in one OS process, built at once: :class:`LongPollProcess`.

The object graph, each part built here and handed what it needs::

    LongPollProcess ── SessionTable    the sessions held, and those that ended or moved
        │           ── ConsumerSide    each session's consumer: start, emit, end
        │           ── SessionMover    hand-off on shutdown, adoption of others'
        │           ── Relay           asks other processes; returns a Result
        └── runs poll / send / close for the sessions held here, and decides
            what to do with the Relay's results (adopt, ask the adopter, 404)

:class:`~wsbridge.transport.longpoll.LongPollTransport` (the WSGI side)
builds one per OS process, on the first request (after a fork, the child
builds its own: it needs its own owner channel and sweeper).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any

import gevent
from gevent.event import AsyncResult

from ... import metrics as _metrics
from ...consumers.routing import Router
from ...exceptions import (
    BadRequest,
    ConfigurationError,
    Conflict,
    Forbidden,
    Gone,
    HTTPError,
    LayerUnavailable,
    NotFound,
)
from ...layers.base import BaseChannelLayer
from ...logs import CONNECTION_ID, CountedWarning
from ...protocol.closecodes import CloseCode
from ...protocol.envelope import decode_frames, encode_frame, validate_close_code
from ...protocol.longpoll import LongPollSession, SessionState
from ...protocol.longpoll_messages import OWNER_PREFIX, RelayRequest
from ...protocol.longpoll_token import Token, TokenSigner, new_session_id
from ..limits import refused
from .checkpoint import Checkpoints, CheckpointStore
from .consumer import ConsumerSide
from .handoff import SessionMover, session_handoff
from .options import LongPollOptions
from .relay import MOVED, Outcome, Relay, Request, Result
from .sessions import Session, SessionTable

__all__ = ["LongPollProcess", "Answer", "error_answer"]

logger = logging.getLogger("wsbridge.transport.longpoll")

Answer = tuple[int, dict[str, Any]]


def error_answer(exc: HTTPError | LayerUnavailable) -> Answer:
    """The JSON answer to a request that failed with ``exc``."""
    if isinstance(exc, HTTPError):
        return exc.status, {"error": exc.reason}
    return 503, {"error": f"channel layer unavailable: {exc}"}


def checkpoint_store(options: LongPollOptions, layer: BaseChannelLayer) -> CheckpointStore | None:
    """The layer's checkpoint store when sessions are to survive a crash (``checkpoints``)."""
    able = "checkpoints" in layer.extensions
    wanted = able if options.checkpoints is None else options.checkpoints
    if wanted and not able:
        raise ConfigurationError(
            "longpoll checkpoints=True needs a channel layer with the 'checkpoints' "
            "capability (the Redis layer, with its process leases on: lease > 0)"
        )
    if not wanted:
        return None
    store: CheckpointStore = getattr(layer, "checkpoints")  # noqa: B009 (a capability)
    return store


def make_signer(options: LongPollOptions, layer: BaseChannelLayer) -> tuple[TokenSigner, bool]:
    """The token signer, and whether its secret is shared by every process."""
    secret = options.secret or os.environ.get("WSBRIDGE_SECRET")
    if secret:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ValueError("the long-poll secret must be at least 16 bytes long")
        return TokenSigner(key), True
    if "shared" in layer.extensions:
        logger.warning(
            "no long-poll secret set (wrap(secret=...) or WSBRIDGE_SECRET): this process "
            "uses a random one, so only the process holding a session can check its "
            "tokens; set the same secret on every process"
        )
    return TokenSigner(secrets.token_bytes(32)), False


class LongPollProcess:
    """This process's long-poll sessions, its owner channel, relay and hand-offs.

    Building one attaches its owner channel to the layer (and joins the
    peers' group when sessions move on shutdown) and starts the sweeper
    that expires silent sessions; :meth:`stop` undoes both.

    Args:
        options: the transport's settings.
        router: routes a session's path to its consumer.
        layer: the channel layer of this process.
    """

    def __init__(self, options: LongPollOptions, router: Router, layer: BaseChannelLayer) -> None:
        self.options = options
        self.router = router
        self.layer = layer
        self.signer, shared_secret = make_signer(options, layer)
        self.shared_secret = shared_secret
        #: Sessions another process adopted from this one (it had stalled past its lease).
        self.taken_over = 0
        self._taken_warning = CountedWarning(
            logger,
            "long-poll session taken over by another process: this one stalled for longer "
            "than its lease, so its sessions were adopted elsewhere and it no longer serves them",
        )
        self.owner = layer.new_channel(OWNER_PREFIX)
        self.table = SessionTable()
        self.consumers = ConsumerSide(layer, self.owner, self.table)
        store = checkpoint_store(options, layer)
        ttl = max(120.0, 2 * options.session_timeout)
        self.mover = SessionMover(
            options, layer, self.owner, self.table, self.consumers, self.signer, router, store, ttl
        )
        self.checkpoints: Checkpoints | None = None
        if store is not None and self.mover.enabled:
            self.checkpoints = Checkpoints(store, self.owner, ttl, self._snapshot)
        else:
            self.mover.store = None
        self.relay = Relay(
            layer,
            self.owner,
            verify=self.signer.verify if shared_secret else None,
            forward_timeout=options.forward_timeout,
            poll_timeout=options.poll_timeout,
        )
        layer.attach(self.owner, self._on_message)
        if self.mover.enabled:
            self.relay.join_peers()
        self.mover.check_expiry()
        self._sweeper = gevent.spawn(self._sweep)

    # -- open --------------------------------------------------------------------------

    def open(
        self, scope: dict[str, Any], consumer: Any, *, origin: str, user: str, ip: str
    ) -> Answer:
        """Start a session for ``consumer`` with ``scope``; the answer to the ``open`` request.

        Args:
            scope: the connection scope, routed.
            consumer: the consumer routed at the session's path.
            origin: the Origin its tokens are bound to.
            user: the user key its tokens are bound to ("" for none).
            ip: the client's admission slot: the session's from now on,
                released when it ends.
        """
        opts = self.options
        sid = new_session_id()
        state = LongPollSession(
            sid,
            now=time.monotonic(),
            timeout=opts.session_timeout,
            max_buffer=opts.max_buffer,
            max_buffer_bytes=opts.max_buffer_bytes,
        )
        session = Session(state, origin=origin, user=user, scope=scope)
        self.table.add(session, ip=ip)
        self.consumers.start(session, consumer, backlog=True)
        if not session.handshake.wait(opts.handshake_timeout):
            self.consumers.end(session, code=CloseCode.ABNORMAL)
            return 504, {"error": "the consumer did not accept in time"}
        if state.state is not SessionState.OPEN and state.state is not SessionState.CLOSING:
            self.consumers.forget(session)
            reason = "connection refused by the application"
            if session.refusal == 503:
                reason = "this server process is restarting: open again"
            return session.refusal, {"error": reason}
        session.use_token(self.signer.sign(sid, self.owner, origin=origin, user=user))
        self._save(session)
        return 200, {
            "token": session.token,
            "subprotocol": state.subprotocol,
            "poll_timeout": opts.poll_timeout,
            "session_timeout": opts.session_timeout,
        }

    # -- poll / send / close: here, on the owner, or on the adopter ----------------------

    def run(self, request: Request) -> Answer:
        """Run a poll, send or close wherever its session is; its (status, body)."""
        token = TokenSigner.parse(request.body.get("token"))
        if token.owner == self.owner or token.sid in self.table:
            result = self.run_local(token, request)
            if result.outcome is not Outcome.MOVED:
                return result.answer
            # This process handed the session off and is going away: reach whoever
            # adopted it, else have the client retry (its next request goes elsewhere).
            result = self.relay.ask_adopter(token.sid, request)
            if result.answered:
                return result.answer
            return 503, {"error": "the session is moving to another server process: retry"}
        return self._forward(token, request)

    def _forward(self, token: Token, request: Request) -> Answer:
        """Run ``request`` for a session another process holds, or held before a restart."""
        relay = self.relay
        relay.check(token, request)
        owner = token.owner
        crashed = self.mover.store is not None
        if crashed and self.mover.owner_dead(owner):  # killed: its checkpoint is adoptable
            answer, _ = self._adopt_crashed_and_run(token, request)
            if answer is not None:
                return answer
        departed = relay.departed(owner)
        if departed or not relay.known_alive(owner):
            # A hand-off may be waiting: look first (a process announces its departure
            # after writing its hand-offs, so no wait).
            result = self._adopt_and_run(token, request, 0.0)
            if result.answered:
                return result.answer
        if not departed:
            give_up = (lambda: self.mover.owner_dead(owner)) if crashed else None
            result = relay.forward(owner, request, give_up)
            if result.answered:
                return result.answer
            # "moved": its hand-off message is written before it says so.
            wait = 0.5 if result.outcome is Outcome.MOVED else 0.0
            result = self._adopt_and_run(token, request, wait)
            if result.answered:
                return result.answer
            if crashed and self.mover.owner_dead(owner):
                answer, _ = self._adopt_crashed_and_run(token, request)
                if answer is not None:
                    return answer
        result = relay.ask_adopter(token.sid, request)
        if result.answered:
            return result.answer
        # Nobody answers for it: if its holder died (its lease ended), adopt its checkpoint.
        answer, retry = self._adopt_crashed_and_run(token, request)
        if answer is not None:
            return answer
        if retry:
            refused("longpoll_retry", "the process holding a session does not answer", log=logger)
            return 503, {"error": "the process holding this session does not answer: retry"}
        if self.mover.leaving:
            refused("longpoll_retry", "restarting: a session handed over elsewhere", log=logger)
            # Restarting too, so it adopts nothing: the hand-off may be waiting for a
            # process that stays (seen under gunicorn's SIGHUP: the other old worker
            # took the next poll and answered 404 for a session being handed over).
            return 503, {"error": "this server process is restarting: retry"}
        raise NotFound("unknown session (the process holding it does not answer)")

    def _adopt_crashed_and_run(self, token: Token, request: Request) -> tuple[Answer | None, bool]:
        """Adopt ``token``'s session from its checkpoint if its holder died, then run it here.

        Returns:
            The answer (None: not adopted), and whether a retry may find it
            adoptable (see :meth:`SessionMover.adopt_crashed`).
        """
        session, retry = self.mover.adopt_crashed(token.sid)
        if session is None:
            return None, retry
        return self.run_local(token, request).answer, False

    def _adopt_and_run(self, token: Token, request: Request, wait: float) -> Result:
        """Adopt ``token``'s session if it waits in the layer, then run ``request`` here."""
        if self.mover.adopt(token.sid, wait) is None:
            return Result(Outcome.GONE)
        return self.run_local(token, request)

    def run_local(self, token: Token, request: Request) -> Result:
        """Run a request for a session held here (or just handed off by this process).

        Returns:
            LOCAL with the answer, or MOVED: this process handed the session
            over (its adopter, or the process asking, takes it from there).

        Raises:
            HTTPError: the request is refused (400, 403, 404, 409, 410).
        """
        session = self.table.get(token.sid)
        if session is not None and self._adopted_elsewhere(token, request, session):
            self._taken_over(session)  # we stalled past our lease: the adopter answers
            return MOVED
        self._check_token(token, request, session)
        if session is not None and session.moving is not None:
            session.moving.wait(self.options.handshake_timeout)  # a hand-off in progress
        if session is None or session.state.moved:
            if self.table.was_moved(token.sid) or (session is not None and session.state.moved):
                return MOVED
            raise self.table.missing(token.sid, signed_here=token.owner == self.owner)
        state = session.state
        state.request_started(time.monotonic())
        context = CONNECTION_ID.set(session.conn.connection_id if session.conn else None)
        answer: dict[str, Any] | None
        try:
            if request.op == "poll":
                answer = self._poll(session, request)
            elif request.op == "send":
                answer = self._send(session, request.body)
            else:
                answer = self._close(session, request.body)
        finally:
            CONNECTION_ID.reset(context)
            state.request_ended(time.monotonic())
        if answer is None:
            return MOVED
        if request.body.get("token") != session.token:
            answer["token"] = session.token  # the session moved here: use its new token
        return Result(Outcome.LOCAL, 200, answer)

    def _adopted_elsewhere(self, token: Token, request: Request, session: Session) -> bool:
        """A genuine token of ``session`` that names a process this one never heard of for it.

        Only a process that adopted the session from its checkpoint signs such
        a token (this one had stalled past its lease); with a per-process
        secret it cannot be told from a forgery, and is refused (403).
        """
        if token.owner == self.owner or not self.shared_secret or self.checkpoints is None:
            return False
        if (token.owner, token.mac) in session.known:
            return False
        try:
            self.signer.verify(token, origin=request.origin, user=request.user)
        except Forbidden:
            return False
        return True

    def _check_token(self, token: Token, request: Request, session: Session | None) -> None:
        if token.owner == self.owner:
            self.signer.verify(token, origin=request.origin, user=request.user)
        elif session is not None:  # adopted here: the client may still hold an older token
            # Owner and MAC both: a token whose owner part was changed is refused.
            TokenSigner.verify_known(token, session.known)
            if (request.origin, request.user) != (session.origin, session.user):
                raise Forbidden("token refused: bound to another Origin or user")

    def _poll(self, session: Session, request: Request) -> dict[str, Any] | None:
        state = session.state
        if state.closed:
            raise Gone("session closed")
        wait = request.body.get("wait", self.options.poll_timeout)
        if type(wait) not in (int, float) or not 0 <= wait < float("inf"):
            raise BadRequest(f"'wait' must be a number of seconds >= 0, got {wait!r}")
        session.wake("superseded")  # at most one poll is pending: the newest wins
        state.ack(request.body.get("ack", 0))
        if state.closed:  # the client acked the server's close frame
            self.consumers.end(session, code=None)
            raise Gone("session closed")
        if not state.has_pending and wait > 0:
            waiter: AsyncResult = AsyncResult()
            session.poller = waiter
            try:
                why = waiter.get(timeout=min(wait, self.options.poll_timeout))
                if why == "ready" and self.options.batch_wait > 0:
                    # What runs now may queue more for this session (the rest of a
                    # broadcast burst): one answer for all of it, however long
                    # the burst, but not past batch_wait on a server never idle.
                    _until_idle(self.options.batch_wait)
                    if session.poller is not waiter:
                        why = "superseded"  # a newer poll came meanwhile: it answers
            except gevent.Timeout:
                why = "timeout"
            finally:
                if session.poller is waiter:
                    session.poller = None
            if why == "superseded":
                raise Conflict("superseded by a newer poll on this session")
            if why == "gone":
                raise Gone(self.table.revoked(state.sid) or "session closed")
        frames = state.pending()
        if frames and not state.moved and not self._save(session):
            return None  # another process holds it now: the client is sent there
        # "moved": answered from the frames handed over, so the client just polls again
        return {"messages": [encode_frame(frame) for frame in frames]}

    def _send(self, session: Session, body: dict[str, Any]) -> dict[str, Any] | None:
        """Hand the new frames to the consumer; None when the session moved meanwhile."""
        frames = decode_frames(body.get("messages"))
        with session.lock:  # keeps concurrent sends of one session in seq order
            state = session.state
            if state.moved:  # handed off while this send waited: apply it over there
                return None
            if state.closed:
                raise Gone("session closed")
            stats = _metrics.STATS
            for frame in state.receive(frames):
                event: dict[str, Any] = {"type": "websocket.receive"}
                if frame.text is not None:
                    event["text"] = frame.text
                else:
                    event["bytes"] = frame.data
                stats.longpoll_messages_in += 1
                payload = frame.text if frame.text is not None else frame.data
                stats.longpoll_bytes_in += len(payload or b"")
                if session.conn is not None:  # an OPEN session has one
                    session.conn.push(event)  # may wait: that is backpressure on this client
            ack = state.client_seq
        if not self._save(session):
            return None
        return {"ack": ack}

    def _close(self, session: Session, body: dict[str, Any]) -> dict[str, Any]:
        code = validate_close_code(body.get("code", int(CloseCode.NORMAL)))
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise BadRequest("'reason' must be a string")
        was_open = session.state.state in (SessionState.OPEN, SessionState.CONNECTING)
        session.state.client_close(code, reason)
        self.consumers.end(session, code=code if was_open else None)
        return {"closed": True}

    # -- checkpoints (checkpoint.py) --------------------------------------------------------

    def _snapshot(self, session: Session) -> dict[str, Any]:
        return session_handoff(session, self.owner, cached_scope=True).to_message()

    def _save(self, session: Session) -> bool:
        """Checkpoint ``session`` before answering; False once another process holds it."""
        if (
            self.checkpoints is None
            or self.checkpoints.save(session, self.options.forward_timeout) is not False
        ):
            return True
        self._taken_over(session)
        return False

    def _taken_over(self, session: Session) -> None:
        """Another process adopted ``session`` (this one stalled past its lease): let it go."""
        state = session.state
        if state.state in (SessionState.OPEN, SessionState.CLOSING):
            state.hand_off()
        self.consumers.forget(session, moved=True)
        session.wake("moved")
        self.consumers.disconnect(session, CloseCode.SERVICE_RESTART)
        self.taken_over = self._taken_warning()

    # -- requests from other processes -----------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        """Layer callback on the owner channel (runs in the layer's greenlet: never block)."""
        request = self.relay.receive(message)
        if request is not None:
            gevent.spawn(self._serve_forwarded, request)

    def _serve_forwarded(self, forwarded: RelayRequest) -> None:
        # The answer may take up to a poll timeout (a held poll, or a send waiting on
        # a busy consumer): say at once that this process is alive and on it.
        self.relay.hold(forwarded)
        request = Request(forwarded.op, forwarded.body, forwarded.origin, forwarded.user)
        try:
            token = TokenSigner.parse(request.body.get("token"))
            result = self.run_local(token, request)
        except (HTTPError, LayerUnavailable) as exc:
            result = Result(Outcome.LOCAL, *error_answer(exc))
        except Exception:  # a bug: answer it rather than let the forwarder time out
            logger.exception("forwarded long-poll %s request failed", request.op)
            result = Result(Outcome.LOCAL, 500, {"error": "internal error"})
        self.relay.answer(forwarded, result)

    # -- shutdown ----------------------------------------------------------------------------

    def close_sessions(self, code: int, reason: str) -> int:
        """Send every open session a close frame with ``code``; returns how many."""
        count = 0
        for session in self.table.sessions():
            if session.state.state is SessionState.OPEN:
                self.consumers.close(session, code, reason)
                count += 1
        return count

    def hand_off_sessions(self, timeout: float) -> int:
        """Hand every session over (see :class:`SessionMover`), then tell the peers."""
        moved = self.mover.hand_off_all(timeout)
        if self.checkpoints is not None:  # no copy of a moved session may stay behind
            self.checkpoints.sync(self.table.sessions())
        self.relay.depart()
        return moved

    def drain(self, code: int, timeout: float) -> None:
        """Hand sessions over (when they move) or close them, and wait for their consumers."""
        if self.mover.enabled:
            self.hand_off_sessions(timeout)
        sessions = self.table.sessions()
        self.close_sessions(code, "server shutting down")
        with gevent.Timeout(timeout, False):
            for session in sessions:
                if session.conn is not None:
                    session.conn.finished.wait()
            while any(session.poller is not None for session in sessions):
                gevent.sleep(0.01)  # held polls are writing their answers

    def stop(self, code: int) -> None:
        """End every session with ``code``, stop the sweeper, detach the owner channel."""
        for session in self.table.sessions():
            self.consumers.end(session, code=code)
        self.abandon()
        self.layer.detach(self.owner)

    def abandon(self) -> None:
        """Stop the sweeper (a forked child's copy of its parent's process state)."""
        self._sweeper.kill(block=False)
        if self.checkpoints is not None:
            self.checkpoints.stop()

    def _sweep(self) -> None:
        interval = max(0.05, min(1.0, self.options.session_timeout / 4))
        keep = max(600.0, self.options.session_timeout * 4)
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            for session in self.table.expired(now):
                logger.debug("long-poll session expired: %ss of silence", session.state.timeout)
                self.consumers.end(session, code=CloseCode.ABNORMAL)
            self.table.prune(now, keep)
            if self.checkpoints is not None:
                self.checkpoints.sweep(self.table.sessions(), now)
                for session in self.checkpoints.pop_taken():
                    self._taken_over(session)


def _until_idle(limit: float) -> None:
    """Wait until the hub has nothing else to run (gevent.idle), at most ``limit`` seconds."""
    with gevent.Timeout(limit, False):
        gevent.idle()
