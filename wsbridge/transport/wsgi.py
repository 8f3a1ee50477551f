"""The WSGI bridge: ``wrap(app)`` sends realtime requests to wsbridge, the rest to ``app``.

::

    from wsbridge import wrap
    application = wrap(my_wsgi_app)   # then: wsbridge serve mysite.wsgi

Dispatch is a small explicit table, tried in order (:meth:`WSBridgeApp.dispatch`):

1. a WebSocket upgrade whose path a consumer is routed at -> the WebSocket
   transport (unrouted upgrades get 404, unless ``pass_unrouted=True``);
2. wsbridge's own endpoints, mounted by prefix (:meth:`WSBridgeApp.mount`):
   this is where long-poll (``/_wsbridge/lp/``) and the browser client
   (``/_wsbridge/wsbridge.js``) plug in, each through the endpoint provider
   its module defines (:func:`builtin_endpoint_providers`);
3. HTTP consumers (``@router.http``), through the dispatcher
   :mod:`wsbridge.transport.http` defines (:func:`builtin_http_dispatcher`);
4. everything else -> the wrapped app, untouched.

A WebSocket needs the raw client socket. Each server flavour's hand-over is
tried in :func:`wsbridge.transport.servers.take_over`; a server that cannot
lend it (wsgiref, a threaded server) gets HTTP 500 and an ERROR line naming
what to use instead, never a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import admission
from .. import metrics as _metrics
from ..consumers.routing import Router
from ..exceptions import ConfigurationError
from ..identity import authenticate_scope
from . import servers
from .origin import environ_checker, origin_allowed
from .scope import build_scope, request_path
from .websocket import Handover, WebSocketOptions, serve_websocket

__all__ = [
    "wrap",
    "WSBridgeApp",
    "Endpoint",
    "check_origin",
    "is_websocket_request",
    "builtin_endpoint_providers",
    "builtin_http_dispatcher",
]

logger = logging.getLogger("wsbridge.wsgi")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
OriginCheck = Callable[[dict[str, Any]], bool]
#: ``f(app) -> endpoints``: a module's own URLs under the app's prefix.
EndpointProvider = Callable[["WSBridgeApp"], Iterable["Endpoint"]]
#: ``f(environ) -> WSGI app or None``: who answers a routed HTTP consumer's URL.
HttpDispatch = Callable[[dict[str, Any]], "WSGIApp | None"]


@dataclass(frozen=True)
class Endpoint:
    """One of wsbridge's own URLs: requests whose path starts with ``prefix``."""

    prefix: str
    app: WSGIApp
    exact: bool = False

    def matches(self, path: str) -> bool:
        return path == self.prefix if self.exact else path.startswith(self.prefix)


def is_websocket_request(environ: dict[str, Any]) -> bool:
    """True when the request asks to upgrade to WebSocket (any method, any case)."""
    upgrade = environ.get("HTTP_UPGRADE", "")
    return "websocket" in upgrade.lower() or environ.get("wsgi.websocket") is not None


# -- Origin ------------------------------------------------------------------------


def check_origin(
    origin: str | None,
    host: str | None,
    allowed: Sequence[str] | None = None,
    *,
    scheme: str = "http",
) -> bool:
    """Is a browser at ``origin`` allowed to open a WebSocket here?

    Args:
        origin: the ``Origin`` header, or None (non-browser clients send none;
            they are allowed, since Origin only protects browsers' cookies).
        host: the ``Host`` header of the request.
        allowed: None for "same host only"; else the patterns of
            :mod:`wsbridge.transport.origin` (``"https://*.example.com"``,
            ``"localhost:*"``, ``".example.com"``; ``"*"`` allows all).
        scheme: the request's scheme, to ignore default ports.

    Returns:
        True to go on, False to refuse with 403 (a malformed ``Origin`` is refused).
    """
    if allowed is None:
        return origin_allowed(origin, None, host=host, scheme=scheme) if host else origin is None
    return origin_allowed(origin, allowed)


# -- the WSGI app --------------------------------------------------------------------


def _plain(
    start_response: Callable[..., Any],
    status: str,
    text: str,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    body = (text + "\n").encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *headers,  # no Connection header: hop-by-hop, PEP 3333 forbids it to apps
        ],
    )
    return [body]


class WSBridgeApp:
    """The WSGI callable returned by :func:`wrap`; see the module docstring.

    Attributes:
        app: the wrapped WSGI app.
        router: where WebSocket paths are resolved (``router.resolve``).
        websocket: the :class:`~wsbridge.transport.wsoptions.WebSocketOptions` of every connection.
        endpoints: wsbridge's own URLs, tried in order (:meth:`mount`).
    """

    wsbridge_wrapped = True

    def __init__(
        self,
        app: WSGIApp,
        *,
        router: Router | None = None,
        layer: Any = None,
        websocket: WebSocketOptions | None = None,
        allowed_origins: Sequence[str] | None = None,
        origin_check: OriginCheck | None = None,
        pass_unrouted: bool = False,
        prefix: str = "/_wsbridge/",
        secret: str | bytes | None = None,
        longpoll: dict[str, Any] | None = None,
        http: Any = None,
        identity: Any = None,
        group_policies: Any = None,
        limits: Any = None,
        metrics_path: str | None = None,
        metrics_token: str | None = None,
        status_path: str | None = None,
        status_token: str | None = None,
        endpoint_providers: Sequence[EndpointProvider] | None = None,
        http_dispatcher: Callable[[WSBridgeApp], HttpDispatch] | None = None,
    ) -> None:
        if router is None:
            from ..consumers.routing import router as default_router

            router = default_router
        self.app = app
        self.router = router
        if layer is not None:
            # One layer per process: views, Group and Channel send through this one too.
            from ..layers import install_channel_layer

            install_channel_layer(layer, "explicit")
        self._layer = layer
        self.websocket = websocket if websocket is not None else WebSocketOptions()
        self.origin_check = origin_check or environ_checker(allowed_origins)
        self.allowed_origins = allowed_origins
        self.pass_unrouted = pass_unrouted
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.secret = secret  # signs long-poll tokens (else WSBRIDGE_SECRET)
        self.longpoll = longpoll  # LongPollOptions fields (wsbridge.transport.longpoll)
        self.http = http  # HttpOptions or its fields (wsbridge.transport.http), read per request
        self.identity = identity  # wsbridge.identity.IdentityOptions: tokens, re-checks
        _configure_process(identity, limits, group_policies)
        self.endpoints: list[Endpoint] = []
        providers = (
            builtin_endpoint_providers() if endpoint_providers is None else endpoint_providers
        )
        for provider in providers:
            self.endpoints.extend(provider(self))
        dispatcher = builtin_http_dispatcher() if http_dispatcher is None else http_dispatcher
        self.http_dispatch: HttpDispatch | None = dispatcher(self)
        self.metrics_path = metrics_path
        self._exact_paths = {p for p in (metrics_path, status_path) if p}
        if metrics_path:  # off by default; wsbridge.metrics says how to protect it
            self.endpoints.insert(
                0, Endpoint(metrics_path, _metrics.metrics_app(metrics_token), exact=True)
            )
        #: wsbridge's own WebSocket routes (the status page's), tried before ``router``.
        self.own_router: Router | None = None
        if status_path:  # off by default; wsbridge.statuspage says who may look
            self._mount_status_page(status_path, status_token)
        self._started = False
        servers.app_created(self)  # gunicorn: check now, SIGTERM closes with 1012 first

    def _mount_status_page(self, path: str, token: str | None) -> None:
        from ..statuspage import consumer_for, status_app

        ws_path = path.rstrip("/") + "/ws"
        self.own_router = Router()
        self.own_router.websocket(ws_path.lstrip("/"))(consumer_for(token))
        self.endpoints.insert(0, Endpoint(path, status_app(token, ws_path), exact=True))

    def resolve_websocket(self, path: str) -> Any:
        """The route for a WebSocket path: wsbridge's own first, then ``router``'s."""
        if self.own_router is not None:
            match = self.own_router.resolve("websocket", path)
            if match is not None:
                return match
        return self.router.resolve("websocket", path)

    # -- hooks for the other transports -----------------------------------------

    def mount(self, prefix: str, app: WSGIApp, *, exact: bool = False) -> Endpoint:
        """Serve requests under ``prefix`` with ``app`` (before the wrapped app)."""
        endpoint = Endpoint(prefix, app, exact)
        self.endpoints.append(endpoint)
        return endpoint

    @property
    def layer(self) -> Any:
        """The channel layer (resolved on first use, so settings load late)."""
        if self._layer is None:
            from ..layers import get_channel_layer

            self._layer = get_channel_layer()
        return self._layer

    # -- dispatch -----------------------------------------------------------------

    def dispatch(self, environ: dict[str, Any]) -> WSGIApp:
        """Pick the WSGI app for this request (the table in the module docstring)."""
        if is_websocket_request(environ):
            if self.claims(environ):
                return self.serve_websocket
        path = environ.get("PATH_INFO", "")
        if path.startswith(self.prefix) or path in self._exact_paths:
            for endpoint in self.endpoints:
                if endpoint.matches(path):
                    return endpoint.app
        if self.http_dispatch is not None:
            found = self.http_dispatch(environ)
            if found is not None:
                return found
        return self.app

    def claims(self, environ: dict[str, Any]) -> bool:
        """Does wsbridge answer this WebSocket request (routed, or 404 for it)?"""
        match = self.resolve_websocket(request_path(environ))
        if match is not None:
            environ["wsbridge.route"] = match  # serve_websocket does not route it again
            return True
        # gevent-websocket already upgraded it for the site's own code: let it through.
        return not self.pass_unrouted and environ.get("wsgi.websocket") is None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not self._started:
            self._start_serving(environ)
        return self.dispatch(environ)(environ, start_response)

    def _start_serving(self, environ: dict[str, Any]) -> None:
        # First request of this process: it serves now. Its heartbeat (drop
        # counters, open WebSockets) goes out through a shared layer.
        servers.first_request(self, environ)  # uWSGI: close with 1012 on reload
        from ..heartbeat import register_counts, register_gauge, start_heartbeat
        from ..process import mark_serving
        from .limits import refusal_counts
        from .websocket import active_connections

        self._started = True
        mark_serving()
        register_gauge("websockets", lambda: len(active_connections()))
        register_counts("refusals", refusal_counts)  # what wsbridge status shows as refused
        register_gauge("longpoll_sessions", _metrics.longpoll_sessions)
        register_gauge("sse_streams", _metrics.sse_streams)
        from ..statuspage import register_rate_gauges

        register_rate_gauges()
        _register_control_gauges(register_gauge)
        start_heartbeat(self.layer, "server")
        if _metrics.enabled():
            _metrics.instrument_layer(self.layer)
            _metrics.start_flusher()

    def serve_websocket(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Answer a WebSocket request: route, check Origin, take the socket, run it."""
        path = request_path(environ)
        match = environ.pop("wsbridge.route", None) or self.resolve_websocket(path)
        upgraded = environ.get("wsgi.websocket") is not None
        if match is None and not upgraded:
            logger.info("no WebSocket consumer at %s: 404", path)
            _metrics.record_handshake("refused", "no_route")
            return _plain(
                start_response, "404 Not Found", f"No WebSocket consumer is routed at {path}."
            )
        if not self.origin_check(environ) and not upgraded:
            logger.warning(
                "refused WebSocket to %s from Origin %r: 403", path, environ.get("HTTP_ORIGIN")
            )
            _metrics.record_handshake("refused", "origin")
            return _plain(
                start_response, "403 Forbidden", "This Origin may not open a WebSocket here."
            )
        environ["wsbridge.app"] = self
        ip = str(environ.get("REMOTE_ADDR") or "?")
        busy = admission.current().admit(ip, "websocket")
        if busy is not None:
            return _plain(
                start_response,
                "429 Too Many Requests",
                f"{busy}; retry later.",
                headers=[("Retry-After", str(admission.current().retry_after(ip)))],
            )
        try:
            return self._serve_admitted(environ, start_response, path, match, upgraded)
        finally:
            admission.current().release(ip)

    def _serve_admitted(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        path: str,
        match: Any,
        upgraded: bool,
    ) -> Any:
        try:
            handover = servers.take_over(environ, start_response)
            servers.check_monkey_patched()
        except ConfigurationError as exc:
            logger.error("cannot serve the WebSocket at %s: %s", path, exc)
            _metrics.record_handshake("refused", "server_error")
            return _plain(start_response, "500 Internal Server Error", f"wsbridge: {exc}")
        if match is None or (handover.upgraded and not self.origin_check(environ)):
            return self._refuse_upgraded(handover)
        scope = build_scope(environ, "websocket", transport="websocket")
        scope["url_route"] = match.url_route
        refused = authenticate_scope(scope, self.identity)
        if refused is not None:
            return self._refuse_token(handover, refused)
        outcome = serve_websocket(
            handover, environ, scope, match.consumer, layer=self.layer, options=self.websocket
        )
        return handover.finish(outcome.status, outcome.bytes_sent)

    def _refuse_token(self, handover: Handover, kind: str) -> Any:
        # The socket is ours now: answer 403 on it (or a 1008 close after a server's 101).
        if handover.upgraded:
            return self._refuse_upgraded(handover)
        body = f"Connect token refused: {kind}.\n".encode()
        head = (
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            handover.sock.sendall(head + body)
        except OSError:
            pass
        return handover.finish(403, len(head) + len(body))

    def _refuse_upgraded(self, handover: Handover) -> Any:
        # The server already said 101: all that is left is a close frame (1008).
        from websockets.frames import Close, Frame, Opcode

        try:
            handover.sock.sendall(
                Frame(Opcode.CLOSE, Close(1008, "refused").serialize()).serialize(mask=False)
            )
        except OSError:
            pass
        return handover.finish(101, 0)


def _configure_process(identity: Any, limits: Any, group_policies: Any) -> None:
    # Process-wide defaults a wrapped app sets: token options, admission limits,
    # slow-client policies (each module keeps its own).
    if identity is not None:
        from ..identity import set_default_options

        set_default_options(identity)
    if limits is not None:
        admission.configure(limits)
    if group_policies is not None:
        from ..policies import configure_group_policies

        configure_group_policies(group_policies)


def builtin_endpoint_providers() -> tuple[EndpointProvider, ...]:
    """The endpoints every wrapped app mounts: long-poll's and the browser client's.

    Each is defined by its own module (``wsbridge.transport.longpoll.endpoints``,
    ``wsbridge.transport.static.endpoints``); ``WSBridgeApp(endpoint_providers=...)``
    replaces the list.
    """
    from . import longpoll, static

    return (longpoll.endpoints, static.endpoints)


def builtin_http_dispatcher() -> Callable[[WSBridgeApp], HttpDispatch]:
    """What routes ``@router.http`` URLs: ``wsbridge.transport.http.dispatcher``."""
    from . import http

    return http.dispatcher


def _register_control_gauges(register: Callable[[str, Callable[[], float]], None]) -> None:
    """Identity, limits and slow-client counters in every heartbeat (``wsbridge status``)."""
    from .. import policies
    from ..admission import REASONS as LIMIT_REASONS
    from ..admission import counters as limit_counters
    from ..consumers import identity_hooks as identity

    def reader(table: dict[str, int], name: str) -> Callable[[], float]:
        return lambda: float(table.get(name, 0))

    register("identity_connections", lambda: float(len(identity._tracked)))
    for name in identity.counters:
        register(f"identity_{name}", reader(identity.counters, name))
    for name in LIMIT_REASONS:
        register(f"limits_{name}", reader(limit_counters, name))
    for name in policies.counters:
        register(f"slow_client_{name}", reader(policies.counters, name))


def wrap(
    app: WSGIApp,
    *,
    router: Router | None = None,
    layer: Any = None,
    websocket: WebSocketOptions | None = None,
    allowed_origins: Sequence[str] | None = None,
    origin_check: OriginCheck | None = None,
    pass_unrouted: bool = False,
    prefix: str = "/_wsbridge/",
    secret: str | bytes | None = None,
    longpoll: dict[str, Any] | None = None,
    http: Any = None,
    identity: Any = None,
    group_policies: Any = None,
    limits: Any = None,
    metrics_path: str | None = None,
    metrics_token: str | None = None,
    status_path: str | None = None,
    status_token: str | None = None,
) -> WSBridgeApp:
    """Wrap a WSGI app so WebSocket (and long-poll) requests reach wsbridge.

    Args:
        app: the site's WSGI app; it keeps every request wsbridge does not claim.
        router: the routes to serve (default: ``wsbridge.router``).
        layer: the channel layer. Given, it becomes the process's layer: what
            ``get_channel_layer()``, ``Group`` and ``Channel`` return in this
            process (the strongest source, docs/topics/layers.rst). Default:
            ``get_channel_layer()`` on first use.
        websocket: limits and knobs (:class:`~wsbridge.transport.wsoptions.WebSocketOptions`).
        allowed_origins: Origin patterns allowed to connect (default: only the
            request's own Host); see :func:`check_origin`.
        origin_check: replace the Origin check: ``f(environ) -> bool``.
        pass_unrouted: hand WebSocket requests for unrouted paths to ``app``
            instead of answering 404.
        prefix: where wsbridge's own endpoints (long-poll, JS client) live.
        secret: key signing long-poll session tokens; give every process the
            same one (default: ``WSBRIDGE_SECRET``, else a random one per process).
        longpoll: long-poll settings (``poll_timeout``, ``session_timeout``,
            ``max_body``...; see :class:`~wsbridge.transport.longpoll.LongPollOptions`).
        http: limits of HTTP consumers (``hold_timeout``, ``max_body_size``...): an
            :class:`~wsbridge.transport.http.HttpOptions` or a dict of its fields.
        identity: connect tokens and session re-checks
            (:class:`~wsbridge.identity.IdentityOptions`; see docs/topics/identity.rst).
        group_policies: slow-client policies by group pattern
            (``{"ticker.*": GroupPolicy("coalesce", key="symbol")}``; :mod:`wsbridge.policies`).
        limits: connections, handshakes and inbound rates per IP and per user
            (:class:`~wsbridge.admission.LimitOptions` or a dict of its fields).
        metrics_path: serve Prometheus metrics at this path (e.g.
            ``"/_wsbridge/metrics"``; off by default; needs the ``metrics`` extra;
            see :mod:`wsbridge.metrics`). Anyone reaching it learns your traffic:
            give ``metrics_token`` or keep the path off the public proxy.
        metrics_token: when given, a scrape needs ``Authorization: Bearer <token>``.
        status_path: serve the live status page here (e.g. ``"/_wsbridge/status"``;
            off by default; its WebSocket is at ``status_path + "/ws"``; see
            :mod:`wsbridge.statuspage`).
        status_token: the token a viewer needs (``?token=``); under Django a staff
            user needs none. With neither, every viewer is refused.

    Returns:
        A WSGI app; serve it with ``wsbridge serve`` or ``gunicorn -k gevent``.
    """
    return WSBridgeApp(
        app,
        router=router,
        layer=layer,
        websocket=websocket,
        allowed_origins=allowed_origins,
        origin_check=origin_check,
        pass_unrouted=pass_unrouted,
        prefix=prefix,
        secret=secret,
        longpoll=longpoll,
        http=http,
        identity=identity,
        group_policies=group_policies,
        limits=limits,
        metrics_path=metrics_path,
        metrics_token=metrics_token,
        status_path=status_path,
        status_token=status_token,
    )
