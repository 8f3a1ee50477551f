"""The WSGI side of long-poll: :class:`LongPollTransport` answers the four endpoints.

It checks what HTTP decides (Origin, method, body size and time, JSON), and
hands the rest to this OS process's
:class:`~wsbridge.transport.longpoll.process.LongPollProcess`, built on the
first request (and again in a forked child).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from gevent.lock import Semaphore

from ... import admission
from ... import metrics as _metrics
from ...admission import client_ip
from ...consumers.routing import Router
from ...exceptions import (
    BadRequest,
    Forbidden,
    HTTPError,
    LayerUnavailable,
    MethodNotAllowed,
    NotFound,
)
from ...identity import authenticate_scope
from ...layers.base import BaseChannelLayer
from ...protocol.closecodes import CloseCode
from ..http import read_body
from ..limits import close_after_response, refused
from ..origin import Origins
from ..scope import build_scope
from .options import LongPollOptions, default_user_key
from .process import Answer, LongPollProcess, error_answer
from .relay import Request
from .sessions import Session

__all__ = ["LongPollTransport", "endpoints"]

logger = logging.getLogger("wsbridge.transport.longpoll")

_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
_OPS = ("open", "poll", "send", "close")


#: How deep a long-poll body's JSON may nest (a real one is 3 or 4 levels).
MAX_BODY_DEPTH = 32


def _too_deep(value: Any, limit: int = MAX_BODY_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests containers deeper than ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class _BodyRefused(Exception):
    """The request body was refused while it was read: answer it, then close the connection."""

    def __init__(self, error: HTTPError) -> None:
        super().__init__(error.reason)
        self.error = error


class LongPollTransport:
    """Serves the long-poll endpoints; ``wrap()`` sends requests under ``prefix`` here.

    Args:
        router: routes paths to consumers (default ``wsbridge.router``).
        layer: the channel layer, or a callable returning it (default
            ``get_channel_layer``), looked up on the first request.
        scope_builder: environ -> websocket scope (``wrap`` passes its own,
            which may add ``user``); the path fields are replaced by the
            session's path.
        origin_check: environ -> whether its Origin is allowed (``wrap``
            passes the WebSocket transport's).
        **options: :class:`~wsbridge.transport.longpoll.LongPollOptions` fields.
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
        self._origin_check = origin_check or self._default_origin_check()
        #: ``wrap(identity=...)``: connect tokens for ``open`` (set by :func:`endpoints`).
        self.identity: Any = None
        self._process: LongPollProcess | None = None
        self._pid = 0
        self._lock = Semaphore()
        # A fork (gunicorn workers) builds its own process state: a gevent lock copied
        # across the fork must not be the one a parent's greenlet held.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = Semaphore()

    def _default_origin_check(self) -> Callable[[dict[str, Any]], bool]:
        """The same host as the request, or one of ``allowed_origins`` (the one matcher)."""
        origins = Origins(self.options.allowed_origins)

        def check(environ: dict[str, Any]) -> bool:
            # An empty Origin header counts as none, as it always has for long-poll.
            return origins.allows(
                environ.get("HTTP_ORIGIN") or None,
                host=environ.get("HTTP_HOST") or None,
                scheme=environ.get("wsgi.url_scheme", "http"),
            )

        return check

    # -- this OS process's state ---------------------------------------------------------

    @property
    def process(self) -> LongPollProcess:
        """This OS process's sessions, owner channel, relay and hand-offs (built on first use)."""
        current = self._current()
        if current is not None:
            return current
        with self._lock:
            current = self._current()
            if current is None:
                if self._process is not None:  # the parent's, copied by a fork
                    self._process.abandon()
                current = self._process = self._build_process()
                self._pid = os.getpid()
                _metrics.register_longpoll_sessions(self.open_sessions)
            return current

    def _current(self) -> LongPollProcess | None:
        return self._process if self._pid == os.getpid() else None

    def _build_process(self) -> LongPollProcess:
        from ...consumers.routing import router as default_router
        from ...layers import get_channel_layer

        source = self._layer_source if self._layer_source is not None else get_channel_layer
        layer = source() if callable(source) else source
        return LongPollProcess(self.options, self._router or default_router, layer)

    @property
    def sessions(self) -> dict[bytes, Session]:
        """The sessions this process holds now, by session id (empty before the first request)."""
        current = self._current()
        return current.table.held if current is not None else {}

    @property
    def owner(self) -> str:
        """This process's owner channel, named in the tokens it signs ("" before a request)."""
        current = self._current()
        return current.owner if current is not None else ""

    def open_sessions(self) -> int:
        """Sessions this process holds now (the ``wsbridge_longpoll_sessions`` gauge)."""
        return len(self.sessions)

    def can_hand_off(self) -> bool:
        """True when sessions move to another process on shutdown instead of closing.

        The ``handoff`` option, or by default: the layer is shared across
        processes (``"shared" in layer.extensions``; with the in-memory
        layer there is no other process to take them).
        """
        current = self._current()
        if current is not None:
            return current.mover.enabled
        return bool(self.options.handoff)

    # -- shutdown ------------------------------------------------------------------------

    def close_sessions(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> int:
        """Send every open session a close frame with ``code``; returns how many.

        The frame answers the session's pending poll (or its next one), as a
        WebSocket's close frame would; the consumer gets its disconnect. Used
        by a graceful restart (1012) before the process stops.
        """
        current = self._current()
        return current.close_sessions(code, reason) if current is not None else 0

    def release_sessions(
        self,
        code: int = CloseCode.SERVICE_RESTART,
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
        current = self._current()
        if current is None:
            return 0
        if current.mover.enabled:
            return current.hand_off_sessions(timeout)
        return current.close_sessions(code, reason)

    def hand_off_sessions(self, timeout: float = 5.0) -> int:
        """Hand every session to the layer for another process to adopt; returns how many.

        The consumers get ``websocket.disconnect`` (1012) and up to
        ``timeout`` seconds to finish; a session that cannot be handed over
        (the layer refuses the message) is closed with 1012 instead. New
        opens are refused with 503 from now on.
        """
        current = self._current()
        return current.hand_off_sessions(timeout) if current is not None else 0

    def close(self, code: int = CloseCode.GOING_AWAY, *, timeout: float = 0.0) -> None:
        """Disconnect every session with ``code`` and stop the sweeper (server shutdown).

        1001 (going away) by default; a graceful restart passes 1012. With a
        ``timeout``, sessions are first handed over to the other processes
        when :meth:`can_hand_off` (see :meth:`release_sessions`); the others
        are sent their close frame (a held poll carries it to the client,
        which then reconnects at once) and the consumers get up to
        ``timeout`` seconds to finish.
        """
        current = self._current()
        if current is None:
            return
        if timeout > 0:
            current.drain(code, timeout)
        current.stop(code)
        self._process = None

    # -- WSGI ---------------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        """True for a path under this transport's prefix."""
        return path.startswith(self.options.prefix + "/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """Answer one long-poll request (a WSGI app); the greenlet parks during a poll."""
        process = self.process
        origin = environ.get("HTTP_ORIGIN", "")
        close = False
        allowed = self._origin_check(environ)
        cors = self._cors_headers(environ) if allowed else []
        try:
            if not allowed:
                raise Forbidden(f"cross-origin request from {origin!r} refused")
            op = environ.get("PATH_INFO", "")[len(self.options.prefix) + 1 :]
            if op not in _OPS:
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
                status, answer = self._open(process, environ, body, origin)
            else:
                user = ""
                if self._needs_scope:
                    user = self.options.user_key(self._scope_builder(environ))
                status, answer = process.run(Request(op, body, origin, user))
        except (HTTPError, LayerUnavailable) as exc:
            status, answer = error_answer(exc)
            if isinstance(exc, HTTPError) and (status == 408 or close):
                refused(
                    f"longpoll_{status}", f"{environ.get('REMOTE_ADDR')}: {exc.reason}", log=logger
                )
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
        if (raw.count(b"[") + raw.count(b"{") > MAX_BODY_DEPTH) and _too_deep(body):
            # Python 3.13's parser takes thousands of levels where older ones raise:
            # the same answer on every version.
            raise BadRequest("body is nested too deeply")
        if not isinstance(body, dict):
            raise BadRequest(f"body must be a JSON object, not {type(body).__name__}")
        return body

    # -- open ----------------------------------------------------------------------------

    def _open(
        self, process: LongPollProcess, environ: dict[str, Any], body: dict[str, Any], origin: str
    ) -> Answer:
        if process.mover.leaving:
            return 503, {"error": "this server process is restarting: open again"}
        scope, path = self._open_scope(environ, body)
        refusal = authenticate_scope(scope, self.identity)
        if refusal is not None:
            raise Forbidden(f"connect token refused: {refusal}")
        ip = client_ip(scope)
        busy = admission.current().admit(ip, "long-poll")
        if busy is not None:
            raise HTTPError(f"{busy}; retry later", status=429)
        try:
            match = process.router.resolve("websocket", path)
            if match is None:
                raise NotFound(f"no WebSocket consumer is routed at {path!r}")
            scope["url_route"] = match.url_route
            # A token client has no cookie: its later polls carry no user, and the
            # session token alone (128 bits, signed) is what binds them.
            user = "" if "wsbridge.token_claims" in scope else self.options.user_key(scope)
        except BaseException:
            admission.current().release(ip)
            raise
        return process.open(scope, match.consumer, origin=origin, user=user, ip=ip)

    def _open_scope(
        self, environ: dict[str, Any], body: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """The session's scope from the ``open`` body's ``path`` and ``subprotocols``."""
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
        return scope, path


def endpoints(app: Any) -> list[Any]:
    """Mount the long-poll endpoints on a :class:`~wsbridge.transport.wsgi.WSBridgeApp`.

    ``wrap()`` calls this (see ``ENDPOINT_PROVIDERS``). Options come from the
    app's ``longpoll`` dict (``wrap(app, longpoll={...})``) and its ``secret``;
    the Origin policy, router, layer and scope are the WebSocket transport's,
    so a consumer cannot tell the two apart.
    """
    from ..wsgi import Endpoint

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
