"""HTTP long-poll transport: WebSocket semantics over plain POST requests.

Four endpoints under a prefix (``/_wsbridge/lp`` by default) on the wrapped
app's own port; every request and answer is a JSON object::

    POST {prefix}/open   {"path": "/ws/chat/lobby/", "subprotocols": []}
                         -> {"token", "subprotocol", "poll_timeout", "session_timeout"}
    POST {prefix}/poll   {"token", "ack": n}  -> {"messages": [frame, ...]}
    POST {prefix}/send   {"token", "messages": [{"seq", "text"|"bytes"}]} -> {"ack": n}
    POST {prefix}/close  {"token", "code", "reason"} -> {"closed": true}

The consumer runs behind the same :class:`~wsbridge.consumers.runner.Connection`
as a WebSocket's, routed with ``router.resolve("websocket", path)``; only
``scope["transport"] == "longpoll"`` tells them apart. Session state is the
sans-I/O :class:`~wsbridge.protocol.longpoll.LongPollSession`; this module
adds the I/O: a poll parks its request greenlet until a frame is queued or
``poll_timeout`` passes; a second poll replaces the first, which is answered
409. A sweeper greenlet expires silent sessions (the consumer gets
``websocket.disconnect`` with 1006).

No sticky sessions: the token names the layer channel of the process that
holds the session (the *owner*). A request that reaches another process is
forwarded over the channel layer as an ``lp.request`` message; the owner
runs it as if it had arrived locally and answers with ``lp.reply`` (and an
early ``hold`` reply, so a dead owner is noticed quickly): see
``wsbridge.transport.longpoll_relay`` and ``docs/topics/protocol.rst``.

Graceful restarts keep sessions when the layer is shared: the process going
away hands each session to the layer and the next process to see a request
for it adopts it (``wsbridge.transport.longpoll_handoff``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

from .. import admission
from .. import metrics as _metrics
from ..admission import client_ip
from ..consumers.routing import Router
from ..consumers.runner import Connection
from ..exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    HTTPError,
    LayerUnavailable,
    MethodNotAllowed,
    NotFound,
)
from ..identity import authenticate_scope
from ..layers.base import BaseChannelLayer
from ..logs import CONNECTION_ID, new_connection_id
from ..policies import active as policies_active
from ..protocol.envelope import (
    CLOSE_ABNORMAL,
    CLOSE_POLICY,
    CLOSE_SERVER_ERROR,
    decode_frames,
    encode_frame,
    validate_close_code,
)
from ..protocol.longpoll import LongPollSession, SessionState, Token, TokenSigner, new_session_id
from .http import read_body
from .limits import close_after_response, refused
from .longpoll_handoff import HandOffMixin, Session
from .longpoll_relay import OWNER_PREFIX, Relay, Request, SessionMoved
from .scope import build_scope

__all__ = [
    "LongPollTransport",
    "LongPollOptions",
    "origin_allowed",
    "default_user_key",
    "endpoints",
]

logger = logging.getLogger("wsbridge.transport.longpoll")

_TOMBSTONES = 100_000
_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
UserKey = Callable[[dict[str, Any]], str]


def default_user_key(scope: dict[str, Any]) -> str:
    """The user a token is bound to: ``scope["user"]``'s pk (or id, or str), "" for none."""
    user = scope.get("user")
    if user is None or getattr(user, "is_authenticated", True) is False:
        return ""
    if isinstance(user, (str, int)):
        return str(user)
    for attr in ("pk", "id"):
        value = getattr(user, attr, None)
        if value is not None:
            return str(value)
    return ""


def origin_allowed(origin: str, host: str, allowed: Iterable[str]) -> bool:
    """Same host as the request, or listed in ``allowed`` (``"*"``, ``"https://*.example.com"``).

    A request without Origin (not from a browser) is allowed: the token
    binding still applies to it.
    """
    if not origin:
        return True
    netloc = origin.split("://", 1)[-1]
    if host and netloc.lower() == host.lower():
        return True
    for pattern in allowed:
        if pattern == "*" or pattern == origin:
            return True
        if "*." in pattern:
            scheme, _, rest = pattern.partition("://")
            suffix = rest[1:]  # ".example.com"
            if origin.startswith(scheme + "://") and origin.endswith(suffix):
                return True
    return False


@dataclass
class LongPollOptions:
    """Settings of the long-poll transport (``wrap(app, longpoll={...})``).

    Attributes:
        prefix: URL prefix of the endpoints.
        poll_timeout: seconds a poll is held when nothing is waiting.
        session_timeout: seconds of silence before a session expires.
        handshake_timeout: seconds the consumer has to accept an open.
        max_body: request body limit in bytes (413 beyond, and the connection
            is closed without reading the rest).
        body_timeout: seconds a request body may take to arrive (408 beyond,
            and the connection is closed).
        max_buffer: unacked frames held per session; past it the session
            closes with 1013.
        max_buffer_bytes: the same limit in bytes.
        allowed_origins: cross-origin pages allowed (besides the same host).
        secret: token key; ``WSBRIDGE_SECRET`` or a per-process random one
            (with a warning when the layer is shared) when unset.
        forward_timeout: seconds to wait for another process holding a session.
        user_key: scope -> the user id a token is bound to.
        handoff: on shutdown, hand sessions over to the process that sees
            their next request instead of closing them; None (the default)
            does so when the layer is shared (not the in-memory layer).
    """

    prefix: str = "/_wsbridge/lp"
    poll_timeout: float = 25.0
    session_timeout: float = 60.0
    handshake_timeout: float = 10.0
    max_body: int = 1 << 20
    body_timeout: float = 10.0
    max_buffer: int = 1000
    max_buffer_bytes: int = 4 << 20
    allowed_origins: tuple[str, ...] = ()
    secret: str | bytes | None = None
    forward_timeout: float = 5.0
    user_key: UserKey = default_user_key
    handoff: bool | None = None


class _BodyRefused(Exception):
    """The request body was refused while it was read: answer it, then close the connection."""

    def __init__(self, error: HTTPError) -> None:
        super().__init__(error.reason)
        self.error = error


class LongPollTransport(HandOffMixin):
    """Serves the long-poll endpoints; ``wrap()`` sends requests under ``prefix`` here.

    Args:
        router: routes paths to consumers (default ``wsbridge.router``).
        layer: the channel layer, or a callable returning it (default
            ``get_channel_layer``), looked up on the first request.
        scope_builder: environ -> websocket scope (``wrap`` passes its own,
            which may add ``user``); the path fields are replaced by the
            session's path.
        **options: :class:`LongPollOptions` fields.
    """

    def __init__(
        self,
        router: Router | None = None,
        layer: BaseChannelLayer | Callable[[], BaseChannelLayer] | None = None,
        *,
        scope_builder: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        origin_check: Callable[[dict[str, Any]], bool] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(options.get("allowed_origins"), (list, set)):
            options["allowed_origins"] = tuple(options["allowed_origins"])
        self.options = LongPollOptions(**options)
        self.options.prefix = "/" + self.options.prefix.strip("/")
        self._router = router
        self._layer_source = layer
        self._scope_builder = scope_builder or (
            lambda environ: build_scope(environ, "websocket", transport="longpoll")
        )
        # The plain scope never holds a user: skip building it for every poll.
        self._needs_scope = (
            scope_builder is not None or self.options.user_key is not default_user_key
        )
        self._origin_check = origin_check or (
            lambda environ: origin_allowed(
                environ.get("HTTP_ORIGIN", ""),
                environ.get("HTTP_HOST", ""),
                self.options.allowed_origins,
            )
        )
        self.sessions: dict[bytes, Session] = {}
        self._tombstones: OrderedDict[bytes, float] = OrderedDict()
        self._moved: OrderedDict[bytes, float] = OrderedDict()
        self._revoked: OrderedDict[bytes, str] = OrderedDict()  # sid -> why (410 body)
        self._admitted: dict[bytes, str] = {}  # sid -> client IP counted by admission
        #: ``wrap(identity=...)``: connect tokens for ``open`` (set by :func:`endpoints`).
        self.identity: Any = None
        self._adopting: dict[bytes, Event] = {}
        self._leaving = False
        self._relay: Relay | None = None
        self.layer: BaseChannelLayer | None = None
        self.owner = ""
        self._signer: TokenSigner | None = None
        self._shared_secret = False
        self._sweeper: gevent.Greenlet | None = None
        self._start_lock = Semaphore()
        self._started = False
        # A fork (gunicorn workers) needs its own owner channel and sweeper.
        os.register_at_fork(after_in_child=self._forget_process)

    def _forget_process(self) -> None:
        self._started = False
        self._leaving = False
        self._start_lock = Semaphore()

    # -- start-up (lazy, so a fork after wrap() gets its own channel) ---------------

    def _start(self) -> None:
        if self._started:
            return
        with self._start_lock:
            if not self._started:
                self._start_process()

    def _start_process(self) -> None:
        from ..consumers.routing import router as default_router
        from ..layers import get_channel_layer

        self.sessions.clear()
        self._moved.clear()
        self._adopting.clear()
        self._leaving = False
        source = self._layer_source
        if source is None:
            source = get_channel_layer
        self.layer = source() if callable(source) else source
        if self._router is None:
            self._router = default_router
        self._signer, self._shared_secret = self._make_signer()
        self.owner = self.layer.new_channel(OWNER_PREFIX)
        self._relay = Relay(
            self.layer,
            self.owner,
            run_local=self._run_local,
            verify=self._signer.verify if self._shared_secret else None,
            forward_timeout=self.options.forward_timeout,
            poll_timeout=self.options.poll_timeout,
        )
        self._relay.attach(join_peers=self.can_hand_off())
        self._check_handoff_expiry()
        if self._sweeper is not None:  # the parent's, copied by a fork
            self._sweeper.kill(block=False)
        self._sweeper = gevent.spawn(self._sweep)
        self._started = True
        _metrics.register_longpoll_sessions(self.open_sessions)

    def open_sessions(self) -> int:
        """Sessions this process holds now (the ``wsbridge_longpoll_sessions`` gauge)."""
        return len(self.sessions)

    def _make_signer(self) -> tuple[TokenSigner, bool]:
        secret = self.options.secret or os.environ.get("WSBRIDGE_SECRET")
        if secret:
            key = secret.encode() if isinstance(secret, str) else secret
            if len(key) < 16:
                raise ValueError("the long-poll secret must be at least 16 bytes long")
            return TokenSigner(key), True
        from ..layers.memory import MemoryLayer

        if not isinstance(self.layer, MemoryLayer):
            logger.warning(
                "no long-poll secret set (wrap(secret=...) or WSBRIDGE_SECRET): this process "
                "uses a random one, so only the process holding a session can check its "
                "tokens; set the same secret on every process"
            )
        return TokenSigner(secrets.token_bytes(32)), False

    def close_sessions(self, code: int = 1001, reason: str = "") -> int:
        """Send every open session a close frame with ``code``; returns how many.

        The frame answers the session's pending poll (or its next one), as a
        WebSocket's close frame would; the consumer gets its disconnect. Used
        by a graceful restart (1012) before the process stops.
        """
        count = 0
        for session in list(self.sessions.values()):
            if session.state.state is SessionState.OPEN:
                self._emit(session, {"type": "websocket.close", "code": code, "reason": reason})
                count += 1
        return count

    def close(self, code: int = 1001, *, timeout: float = 0.0) -> None:
        """Disconnect every session with ``code`` and stop the sweeper (server shutdown).

        1001 (going away) by default; a graceful restart passes 1012. With a
        ``timeout``, sessions are first handed over to the other processes
        when :meth:`can_hand_off` (see :meth:`release_sessions`); the others
        are sent their close frame (a held poll carries it to the client,
        which then reconnects at once) and the consumers get up to
        ``timeout`` seconds to finish.
        """
        if timeout > 0 and self._started:
            if self.can_hand_off():
                self.hand_off_sessions(timeout)
            sessions = list(self.sessions.values())
            self.close_sessions(code, "server shutting down")
            with gevent.Timeout(timeout, False):
                for session in sessions:
                    if session.conn is not None:
                        session.conn.finished.wait()
                while any(session.poller is not None for session in sessions):
                    gevent.sleep(0.01)  # held polls are writing their answers
        for session in list(self.sessions.values()):
            self._end(session, code=code)
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
        if self._relay is not None:
            self._relay.detach()
        self._started = False

    # -- WSGI ---------------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        """True for a path under this transport's prefix."""
        return path.startswith(self.options.prefix + "/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """Answer one long-poll request (a WSGI app); the greenlet parks during a poll."""
        self._start()
        origin = environ.get("HTTP_ORIGIN", "")
        close = False
        allowed = self._origin_check(environ)
        cors = self._cors_headers(environ) if allowed else []
        try:
            if not allowed:
                raise Forbidden(f"cross-origin request from {origin!r} refused")
            op = environ.get("PATH_INFO", "")[len(self.options.prefix) + 1 :]
            if op not in ("open", "poll", "send", "close"):
                raise NotFound(f"no long-poll endpoint {op!r}")
            method = environ.get("REQUEST_METHOD", "GET").upper()
            if method == "OPTIONS":
                start_response("204 No Content", cors + self._preflight_headers())
                return [b""]
            if method != "POST":
                raise MethodNotAllowed(f"{op} takes POST, not {method}")
            try:
                body = self._read_body(environ)
            except _BodyRefused as refusal:
                close = True
                raise refusal.error from None
            if op == "open":
                status, answer = self._open(environ, body, origin)
            else:
                user = ""
                if self._needs_scope:
                    user = self.options.user_key(self._scope_builder(environ))
                request = Request(op, body, origin, user)
                status, answer = self._dispatch(request)
        except HTTPError as exc:
            status, answer = exc.status, {"error": exc.reason}
            if status == 408 or close:
                refused(
                    f"longpoll_{status}", f"{environ.get('REMOTE_ADDR')}: {exc.reason}", log=logger
                )
        except LayerUnavailable as exc:
            status, answer = 503, {"error": f"channel layer unavailable: {exc}"}
        payload = json.dumps(answer, separators=(",", ":")).encode()
        headers = _JSON + cors + [("Content-Length", str(len(payload)))]
        if close:  # the body was refused: read no more of it, end the connection
            close_after_response(environ, start_response)
            headers.append(("Connection", "close"))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [payload]

    @staticmethod
    def _cors_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
        # Only for an allowed page of another origin: the same origin needs none.
        origin = environ.get("HTTP_ORIGIN", "")
        if not origin or origin.split("://", 1)[-1] == environ.get("HTTP_HOST", ""):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]

    @staticmethod
    def _preflight_headers() -> list[tuple[str, str]]:
        return [
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Max-Age", "600"),
        ]

    def _read_body(self, environ: dict[str, Any]) -> dict[str, Any]:
        """The request's JSON object, read within ``body_timeout`` and ``max_body``.

        Raises:
            _BodyRefused: wrapping the 4xx (400, 408, 413); the caller answers it
                and closes the connection without reading the rest of the body.
        """
        try:
            raw = read_body(environ, self.options.max_body, self.options.body_timeout)
        except HTTPError as exc:
            raise _BodyRefused(exc) from None
        try:
            body = json.loads(raw)
        except RecursionError:  # nested thousands deep: the C parser gives up
            raise BadRequest("body is nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"body must be a JSON object, not {type(body).__name__}")
        return body

    # -- open ----------------------------------------------------------------------------

    def _open(self, environ: dict[str, Any], body: dict[str, Any], origin: str) -> tuple[int, dict]:
        if self._leaving:
            return 503, {"error": "this server process is restarting: open again"}
        target = body.get("path")
        if not isinstance(target, str) or not target.startswith("/") or len(target) > 4096:
            raise BadRequest("'path' must be an absolute path string, e.g. \"/ws/chat/\"")
        offered = body.get("subprotocols", [])
        if not isinstance(offered, list) or not all(isinstance(p, str) for p in offered):
            raise BadRequest("'subprotocols' must be a list of strings")
        path, _, query = target.partition("?")
        try:
            raw_path, query_string = path.encode("utf-8"), query.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") in the JSON string
            raise BadRequest("'path' must be valid Unicode (no lone surrogates)") from None
        scope = self._scope_builder(environ)
        scope.update(
            path=path,
            raw_path=raw_path,
            query_string=query_string,
            subprotocols=offered,
            transport="longpoll",
        )
        refused = authenticate_scope(scope, self.identity)
        if refused is not None:
            raise Forbidden(f"connect token refused: {refused}")
        ip = client_ip(scope)
        busy = admission.current().admit(ip, "long-poll")
        if busy is not None:
            raise HTTPError(f"{busy}; retry later", status=429)
        registered: list[bytes] = []  # the sid, once _forget() is the one to release
        try:
            return self._open_admitted(scope, path, origin, ip, registered)
        except BaseException:
            if not registered:
                admission.current().release(ip)
            raise

    def _open_admitted(
        self, scope: dict[str, Any], path: str, origin: str, ip: str, registered: list[bytes]
    ) -> tuple[int, dict]:
        assert self._router is not None and self._signer is not None
        match = self._router.resolve("websocket", path)
        if match is None:
            raise NotFound(f"no WebSocket consumer is routed at {path!r}")
        scope["url_route"] = match.url_route
        sid = new_session_id()
        self._admitted[sid] = ip
        registered.append(sid)
        opts = self.options
        state = LongPollSession(
            sid,
            now=time.monotonic(),
            timeout=opts.session_timeout,
            max_buffer=opts.max_buffer,
            max_buffer_bytes=opts.max_buffer_bytes,
        )
        # A token client has no cookie: its later polls carry no user, and the
        # session token alone (128 bits, signed) is what binds them.
        user = "" if "wsbridge.token_claims" in scope else opts.user_key(scope)
        session = Session(state, origin=origin, user=user, scope=scope)
        self.sessions[sid] = session
        context = CONNECTION_ID.set(new_connection_id())  # the session's id on its log records
        try:
            session.conn = Connection(
                scope, match.consumer, self.layer, lambda event: self._emit(session, event)
            )
        finally:
            CONNECTION_ID.reset(context)
        if policies_active():  # slow-client policies: wait when the buffer is half full
            session.conn.set_backlog(lambda: state.fill, 500)
        session.conn.push({"type": "websocket.connect"})
        if not session.handshake.wait(opts.handshake_timeout):
            self._end(session, code=CLOSE_ABNORMAL)
            return 504, {"error": "the consumer did not accept in time"}
        if state.state is not SessionState.OPEN and state.state is not SessionState.CLOSING:
            self._forget(session)
            reason = "connection refused by the application"
            if session.refusal == 503:
                reason = "this server process is restarting: open again"
            return session.refusal, {"error": reason}
        self._set_token(session, self._signer.sign(sid, self.owner, origin=origin, user=user))
        return 200, {
            "token": session.token,
            "subprotocol": state.subprotocol,
            "poll_timeout": opts.poll_timeout,
            "session_timeout": opts.session_timeout,
        }

    # -- the consumer's side (runs in the mailbox greenlet: never block) -----------------

    def _emit(self, session: Session, event: dict[str, Any]) -> None:
        state = session.state
        kind = event.get("type")
        if kind == "websocket.accept":
            if state.state is SessionState.CONNECTING:
                state.accept(event.get("subprotocol"))
            session.accepted = True
            session.handshake.set()
        elif kind == "websocket.send":
            if state.state is SessionState.CONNECTING:  # sending implies accepting (ASGI)
                state.accept(None)
            session.accepted = True
            session.handshake.set()
            frame = state.queue(text=event.get("text"), data=event.get("bytes"))
            stats = _metrics.STATS
            stats.longpoll_messages_out += 1
            payload = event.get("text") if event.get("text") is not None else event.get("bytes")
            stats.longpoll_bytes_out += len(payload or b"")
            if frame is not None:
                session.wake()
                if frame.is_close:  # buffer overflow: the client is too slow
                    gevent.spawn(self._disconnect_consumer, session, frame.close)
        elif kind == "websocket.close":
            if session.moving is not None:
                return  # the consumer is ending because of the hand-off: the session goes on
            code = int(event.get("code") or 1000)
            if state.state is SessionState.CONNECTING:
                session.refusal = 500 if event.get("error") else 403
                state.refuse(session.refusal)
                session.handshake.set()
                gevent.spawn(self._disconnect_consumer, session, code)
                return
            if session.resumed and not session.accepted:
                # Refused on resume: the client holds an open session, so this is a close
                # frame; a plain refusal means "not any more" (1008, as a refused open).
                code = CLOSE_SERVER_ERROR if event.get("error") else code
                code = CLOSE_POLICY if code == 1000 else code
            session.handshake.set()
            if event.get("revoked"):
                # Revoked or kicked (wsbridge.identity): the session ends now; its
                # pending and later polls get 410 with the reason.
                reason = str(event.get("reason") or "revoked")
                self._revoked[state.sid] = f"connection closed ({code}): {reason}"
                while len(self._revoked) > _TOMBSTONES:
                    self._revoked.popitem(last=False)
                state.queue_close(code, reason)
                gevent.spawn(self._end, session, code=code)
                return
            if state.queue_close(code, str(event.get("reason") or "")) is not None:
                session.wake()
                gevent.spawn(self._disconnect_consumer, session, code)

    @staticmethod
    def _disconnect_consumer(session: Session, code: int | None) -> None:
        if session.conn is not None:
            session.conn.disconnected(code or CLOSE_ABNORMAL)

    # -- poll / send / close on the owner ------------------------------------------------

    def _dispatch(self, request: Request) -> tuple[int, dict[str, Any]]:
        token = TokenSigner.parse(request.body.get("token"))
        try:
            if token.owner == self.owner or token.sid in self.sessions:
                return self._run_local(token, request)
            assert self._relay is not None
            return self._relay.forward(
                token, request, lambda wait: self._adopt_and_run(token, request, wait)
            )
        except SessionMoved:
            # This process handed the session off and is going away: reach whoever
            # adopted it, else have the client retry (its next request goes elsewhere).
            assert self._relay is not None
            answer = self._relay.ask_adopter(token, request)
            if answer is not None:
                return answer
            return 503, {"error": "the session is moving to another server process: retry"}

    def _run_local(self, token: Token, request: Request) -> tuple[int, dict[str, Any]]:
        """Run a poll, send or close for a session held here (or just handed off by this process).

        Raises:
            SessionMoved: this process handed the session over (a forwarder adopts it).
        """
        assert self._signer is not None
        session = self.sessions.get(token.sid)
        if token.owner == self.owner:
            self._signer.verify(token, origin=request.origin, user=request.user)
        elif session is not None:  # adopted here: the client may still hold an older token
            # Owner and MAC both: a token whose owner part was changed is refused.
            TokenSigner.verify_known(token, session.known)
            if (request.origin, request.user) != (session.origin, session.user):
                raise Forbidden("token refused: bound to another Origin or user")
        if session is not None and session.moving is not None:
            session.moving.wait(self.options.handshake_timeout)  # a hand-off in progress
        if session is None or session.state.moved:
            if token.sid in self._moved or (session is not None and session.state.moved):
                raise SessionMoved()
            if token.sid in self._revoked:
                raise Gone(self._revoked[token.sid])
            if token.owner == self.owner and token.sid in self._tombstones:
                raise Gone("session closed or expired")
            raise NotFound("unknown session")
        state = session.state
        state.request_started(time.monotonic())
        context = CONNECTION_ID.set(session.conn.connection_id if session.conn else None)
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
        if request.body.get("token") != session.token:
            answer["token"] = session.token  # the session moved here: use its new token
        return 200, answer

    def _poll(self, session: Session, request: Request) -> dict[str, Any]:
        state = session.state
        if state.closed:
            raise Gone("session closed")
        wait = request.body.get("wait", self.options.poll_timeout)
        if type(wait) not in (int, float) or not 0 <= wait < float("inf"):
            raise BadRequest(f"'wait' must be a number of seconds >= 0, got {wait!r}")
        session.wake("superseded")  # at most one poll is pending: the newest wins
        state.ack(request.body.get("ack", 0))
        if state.closed:  # the client acked the server's close frame
            self._end(session, code=None)
            raise Gone("session closed")
        if not state.has_pending and wait > 0:
            waiter = session.poller = AsyncResult()
            try:
                why = waiter.get(timeout=min(wait, self.options.poll_timeout))
            except gevent.Timeout:
                why = "timeout"
            finally:
                if session.poller is waiter:
                    session.poller = None
            if why == "superseded":
                raise Conflict("superseded by a newer poll on this session")
            if why == "gone":
                raise Gone(self._revoked.get(state.sid, "session closed"))
        # "moved": answered from the frames handed over, so the client just polls again
        return {"messages": [encode_frame(frame) for frame in state.pending()]}

    def _send(self, session: Session, body: dict[str, Any]) -> dict[str, Any]:
        frames = decode_frames(body.get("messages"))
        with session.lock:  # keeps concurrent sends of one session in seq order
            state = session.state
            if state.moved:  # handed off while this send waited: apply it over there
                raise SessionMoved()
            if state.closed:
                raise Gone("session closed")
            for frame in state.receive(frames):
                event: dict[str, Any] = {"type": "websocket.receive"}
                if frame.text is not None:
                    event["text"] = frame.text
                else:
                    event["bytes"] = frame.data
                stats = _metrics.STATS
                stats.longpoll_messages_in += 1
                payload = frame.text if frame.text is not None else frame.data
                stats.longpoll_bytes_in += len(payload or b"")
                assert session.conn is not None
                session.conn.push(event)  # may wait: that is backpressure on this client
            return {"ack": state.client_seq}

    def _close(self, session: Session, body: dict[str, Any]) -> dict[str, Any]:
        code = validate_close_code(body.get("code", 1000))
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise BadRequest("'reason' must be a string")
        was_open = session.state.state in (SessionState.OPEN, SessionState.CONNECTING)
        session.state.client_close(code, reason)
        self._end(session, code=code if was_open else None)
        return {"closed": True}

    # -- session end and expiry -----------------------------------------------------------

    def _end(self, session: Session, *, code: int | None) -> None:
        """Forget ``session``; tell its consumer ``websocket.disconnect(code)`` unless None."""
        if not session.state.closed:
            session.state.expire()
        session.wake("gone")
        session.handshake.set()
        self._forget(session)
        if code is not None:
            self._disconnect_consumer(session, code)

    def _forget(self, session: Session, *, moved: bool = False) -> None:
        sid = session.state.sid
        ip = self._admitted.pop(sid, None)
        if ip is not None:
            admission.current().release(ip)
        if self.sessions.get(sid) is session:
            del self.sessions[sid]
            table = self._moved if moved else self._tombstones
            table[sid] = time.monotonic()
            while len(table) > _TOMBSTONES:
                table.popitem(last=False)
            if session.resumed:
                self._leave_session_group(sid)

    def _sweep(self) -> None:
        interval = max(0.05, min(1.0, self.options.session_timeout / 4))
        keep = max(600.0, self.options.session_timeout * 4)
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.state.expired(now):
                    logger.debug("long-poll session expired: %ss of silence", session.state.timeout)
                    self._end(session, code=CLOSE_ABNORMAL)
            for table in (self._tombstones, self._moved):
                while table:
                    sid, when = next(iter(table.items()))
                    if now - when < keep:
                        break
                    del table[sid]


def endpoints(app: Any) -> list[Any]:
    """Mount the long-poll endpoints on a :class:`~wsbridge.transport.wsgi.WSBridgeApp`.

    ``wrap()`` calls this (see ``ENDPOINT_PROVIDERS``). Options come from the
    app's ``longpoll`` dict (``wrap(app, longpoll={...})``) and its ``secret``;
    the Origin policy, router, layer and scope are the WebSocket transport's,
    so a consumer cannot tell the two apart.
    """
    from .wsgi import Endpoint

    options = dict(getattr(app, "longpoll", None) or {})
    options.setdefault("prefix", app.prefix + "lp")
    if getattr(app, "secret", None) is not None:
        options.setdefault("secret", app.secret)
    transport = LongPollTransport(
        app.router,
        lambda: app.layer,
        origin_check=app.origin_check,
        **options,
    )
    transport.identity = getattr(app, "identity", None)
    app.longpoll_transport = transport
    return [Endpoint(transport.options.prefix + "/", transport)]
