"""Routing: which consumer serves a path, and which function a background channel.

Routes are registered by decorators on a :class:`Router` (the default one is
``wsbridge.router``), or declared as a list in the Channels style::

    routes = [
        path("ws/chat/<str:room>/", ChatConsumer),
        re_path(r"ws/feed/(?P<feed>\\w+)/$", FeedConsumer),
        path("api/", include("myapp.routing")),
    ]

Path patterns match the request path without its leading slash, like
Django's ``urlpatterns``; captured values land in
``scope["url_route"]["kwargs"]``. A ``re_path`` pattern that starts with
``^/`` or ``/`` (the Channels 1.x spelling) is matched against the full path.

A site lists its consumer modules once (settings, or the command line) and
:func:`~wsbridge.consumers.loading.build_router` imports them, so their
decorators run, and combines them with an optional declared routing module.

The path syntax (converters) is in :mod:`wsbridge.consumers.paths`, the
Channels 1.x ``route()`` entries in :mod:`wsbridge.consumers.routing_v1`;
their public names are importable from here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from ..exceptions import RoutingError
from ..layers.base import validate_channel_name
from .paths import Converter, compile_path, register_converter

__all__ = [
    "Router",
    "Route",
    "RouteMatch",
    "path",
    "re_path",
    "include",
    "route",
    "route_class",
    "URLRouter",
    "ChannelNameRouter",
    "ProtocolTypeRouter",
    "router",
    "load_routes",
    "autodiscover",
    "build_router",
    "register_converter",
    "WEBSOCKET_EVENTS",
    "ContentFilter",
]

#: Event types a Channels 1.x style function consumer can be registered for.
WEBSOCKET_EVENTS = ("websocket.connect", "websocket.receive", "websocket.disconnect")


# -- routes ------------------------------------------------------------------


@dataclass
class RouteMatch:
    """What a path resolved to: the consumer and the captured values."""

    consumer: Any
    kwargs: dict[str, Any]
    args: tuple[Any, ...]
    route: Route

    @property
    def url_route(self) -> dict[str, Any]:
        """The value for ``scope["url_route"]``."""
        return {"args": self.args, "kwargs": self.kwargs}


@dataclass
class Route:
    """One pattern and what it leads to: a consumer or a nested set of routes.

    Build it with :func:`path`, :func:`re_path` or
    :func:`~wsbridge.consumers.routing_v1.route_class`.
    ``fallback`` routes (a function consumer registered without a path) are
    tried after every other route of their router.
    """

    pattern: str
    target: Any
    is_regex: bool = False
    name: str | None = None
    full_path: bool = False
    fallback: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False)
    converters: dict[str, Converter] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.target, (list, tuple)):
            self.target = Router(routes=self.target)
        nested = isinstance(self.target, Router)
        if not nested and not _is_consumer(self.target):
            raise RoutingError(
                f"route {self.pattern!r} leads to {self.target!r}, which is neither a consumer "
                "class nor routes (a Router, a list, or include('module'))"
            )
        pattern = self.pattern
        if self.is_regex:
            if pattern.startswith(("^/", "/")):
                self.full_path = True
            try:
                self.regex = re.compile(pattern)
            except re.error as exc:
                raise RoutingError(f"re_path {pattern!r} is not a valid regex: {exc}") from None
        else:
            self.regex, self.converters = compile_path(pattern.lstrip("/"), end=not nested)

    def match(self, rest: str) -> tuple[str, dict[str, Any], tuple[Any, ...]] | None:
        """Match ``rest`` (no leading slash); return (remaining, kwargs, args) or None."""
        subject = "/" + rest if self.full_path else rest
        m = self.regex.match(subject)
        if m is None:
            return None
        kwargs: dict[str, Any] = {}
        for key, value in m.groupdict().items():
            if value is None:
                continue
            conv = self.converters.get(key)
            try:
                kwargs[key] = conv.to_python(value) if conv else value
            except ValueError:
                return None
        args = () if m.groupdict() else tuple(g for g in m.groups() if g is not None)
        remaining = subject[m.end() :]
        if self.full_path and remaining.startswith("/"):
            remaining = remaining[1:]
        return remaining, kwargs, args


def _is_consumer(target: Any) -> bool:
    return isinstance(getattr(target, "scope_type", None), str) and callable(
        getattr(target, "build", None)
    )


def path(pattern: str, target: Any, *, name: str | None = None) -> Route:
    """A route with Django ``path()`` syntax: ``"ws/chat/<str:room>/"``.

    ``target`` is a consumer class, or nested routes (``include(...)``, a
    Router or a list), in which case the pattern is a prefix.
    """
    return Route(pattern, target, is_regex=False, name=name)


def re_path(pattern: str, target: Any, *, name: str | None = None) -> Route:
    """A route with a regular expression; named groups become kwargs.

    The regex is anchored at the start (``re.match``); end it with ``$`` to
    match the whole path. Start it with ``^/`` to match the full path, as
    Channels 1.x patterns do.
    """
    return Route(pattern, target, is_regex=True, name=name)


@overload
def include(
    target: str | Router | Sequence[Any] | Mapping[str, Any], path: None = None
) -> Router: ...


@overload
def include(target: str | Router | Sequence[Any] | Mapping[str, Any], path: str) -> Route: ...


def include(
    target: str | Router | Sequence[Any] | Mapping[str, Any], path: str | None = None
) -> Router | Route:
    """Nest routes: ``path("api/", include("myapp.routing"))``.

    ``target`` is a Router, a list of routes, a Channels 1.x routing dict
    (``{channel: consumer}``), or the dotted path of a module that defines
    one of ``router``, ``routes``, ``websocket_urlpatterns``, ``urlpatterns``
    or ``channel_routing``. ``"module:name"`` or ``"module.name"`` (the
    Channels 1.x spelling) picks one name.

    With ``path`` (the Channels 1.x form, ``include("chat.routing",
    path=r"^/chat")``) the result is itself a route whose regex prefix is
    stripped before the nested routes match.
    """
    from .loading import as_router, load_routes

    sub = load_routes(target) if isinstance(target, str) else as_router(target)
    if sub is None:
        raise RoutingError(
            f"include() takes a Router, a list, a dict or a module path, not {target!r}"
        )
    if path is None:
        return sub
    return Route(path, sub, is_regex=True)


def URLRouter(routes: Sequence[Any]) -> Router:  # noqa: N802 - the Channels name
    """A Router from a list of routes, as Channels' ``URLRouter`` builds one."""
    return Router(routes=list(routes))


def ChannelNameRouter(mapping: Mapping[str, Any]) -> Router:  # noqa: N802 - the Channels name
    """A Router of background channels: ``{"thumbnails": ThumbnailConsumer}``.

    Values are functions taking a ``message`` or consumer classes whose
    methods are named after message types (Channels 4's ``SyncConsumer``).
    """
    result = Router()
    for name, consumer in mapping.items():
        result.channel(name)(consumer)
    return result


def ProtocolTypeRouter(mapping: Mapping[str, Any]) -> Router:  # noqa: N802 - the Channels name
    """Accept a Channels 4 ``application`` mapping and return its routes.

    ``"websocket"`` routes (a Router, a list, or a URLRouter wrapped in
    middleware that passes them through) and ``"channel"`` routes (a
    ChannelNameRouter) are kept. ``"http"`` is ignored: plain HTTP stays
    with the site's WSGI app.
    """
    result = Router()
    for kind, target in mapping.items():
        if kind == "http":
            continue
        if kind not in ("websocket", "channel"):
            raise RoutingError(
                f"ProtocolTypeRouter: wsbridge serves 'websocket' and 'channel', not {kind!r}"
            )
        inner = getattr(target, "inner", target)  # middleware keeps the app as .inner
        if not isinstance(inner, (Router, list, tuple)):
            raise RoutingError(f"ProtocolTypeRouter[{kind!r}] must be routes, not {target!r}")
        result.merge(inner)
    return result


# -- the router --------------------------------------------------------------


def _scope_type(target: Any) -> str | None:
    return getattr(target, "scope_type", None)


def _same_definition(a: Any, b: Any) -> bool:
    """True when ``b`` is ``a`` re-defined (the module was imported again)."""
    if a is b:
        return True
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


def describe(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"


class Router:
    """Maps paths to consumers and channel names to background consumers.

    Decorators register and return the decorated object unchanged, so a
    consumer module only needs to be imported once for its routes to exist.

    Args:
        routes: ``path()``, ``re_path()``, ``route()``, ``route_class()`` or
            ``include()`` entries, in the order they are tried.
    """

    def __init__(self, routes: Iterable[Any] | None = None) -> None:
        self._routes: list[Route] = []
        self._order: tuple[Route, ...] | None = None  # _routes in the order tried, once asked
        self._channels: dict[str, Callable[..., Any]] = {}
        # Channels 1.x function consumers: path regex -> consumer class
        self._function_routes: dict[str, Any] = {}
        for item in routes or ():
            self._add_item(item)

    def __repr__(self) -> str:
        return f"<Router routes={len(self._routes)} channels={sorted(self._channels)}>"

    def _add_item(self, item: Any) -> None:
        if isinstance(item, Route):
            self.add(item)
        elif isinstance(item, Registration):
            item.apply(self)
        elif isinstance(item, Router):
            self.merge(item)
        else:
            raise RoutingError(
                f"a routing list holds path(), re_path(), route(), route_class() or include() "
                f"entries, not {item!r}"
            )

    # -- registration --------------------------------------------------------

    def add(self, route: Route) -> Route:
        """Append a route (from ``path()`` / ``re_path()``)."""
        if isinstance(route.target, Router) and route.target._contains(self):
            raise RoutingError("a router cannot include itself, directly or through others")
        self._routes.append(route)
        self._order = None
        return route

    def _contains(self, other: Router) -> bool:
        return self is other or any(
            isinstance(r.target, Router) and r.target._contains(other) for r in self._routes
        )

    def _register(self, route: Route) -> None:
        # A decorator running twice for one pattern is a module imported
        # again (reload, __main__): replace. A different consumer is a mistake.
        for i, existing in enumerate(self._routes):
            if existing.pattern == route.pattern and existing.is_regex == route.is_regex:
                if _scope_type(existing.target) != _scope_type(route.target):
                    continue
                if not _same_definition(existing.target, route.target):
                    raise RoutingError(
                        f"{route.pattern!r} is already routed to {describe(existing.target)}; "
                        f"cannot route it to {describe(route.target)} too"
                    )
                self._routes[i] = route
                self._order = None
                return
        self.add(route)

    def websocket(
        self, pattern: str, consumer: Any = None, *, regex: bool = False, name: str | None = None
    ) -> Any:
        """Decorator: serve WebSocket (and long-poll) connections on ``pattern``.

        ``pattern`` uses ``path()`` syntax, or is a regex with ``regex=True``.
        ``router.websocket("ws/x/", XConsumer)`` registers without decorating.
        """

        def register(consumer: Any) -> Any:
            if _scope_type(consumer) != "websocket" or not _is_consumer(consumer):
                raise RoutingError(
                    f"@router.websocket({pattern!r}) needs a WebsocketConsumer subclass, "
                    f"got {consumer!r}"
                )
            self._register(Route(pattern, consumer, is_regex=regex, name=name))
            return consumer

        return register(consumer) if consumer is not None else register

    def http(self, pattern: str, *, regex: bool = False, name: str | None = None) -> Any:
        """Decorator: take over plain HTTP requests on ``pattern`` (HttpConsumer)."""

        def register(consumer: Any) -> Any:
            target = consumer
            if _scope_type(consumer) != "http":
                if not callable(consumer):
                    raise RoutingError(
                        f"@router.http needs an HttpConsumer or function, got {consumer!r}"
                    )
                from .http import function_http_consumer

                target = function_http_consumer(consumer)
            self._register(Route(pattern, target, is_regex=regex, name=name))
            return consumer

        return register

    def on(self, event_type: str, path: str | None = None) -> Callable[[Any], Any]:
        """Decorator: a Channels 1.x function consumer for ``event_type``.

        ``path`` is a regex (``r"^/chat/$"`` matches the full path; named
        groups are passed to the function as keyword arguments). Without it
        the function serves every WebSocket path no other route of this
        router takes. The function takes one ``message``.
        """
        if event_type not in WEBSOCKET_EVENTS:
            raise RoutingError(
                f"@router.on takes one of {', '.join(WEBSOCKET_EVENTS)}, not {event_type!r}"
            )

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            from .message import FunctionConsumer

            if not callable(func):
                raise RoutingError(f"@router.on({event_type!r}) needs a function, got {func!r}")
            key = path if path is not None else ".*"
            consumer = self._function_routes.get(key)
            if consumer is None:
                consumer = FunctionConsumer.for_path(key)
                self._function_routes[key] = consumer
                route_ = Route(key, consumer, is_regex=True)
                route_.fallback = path is None
                self.add(route_)
            existing = consumer.handlers.get(event_type)
            if existing is not None and not _same_definition(existing, func):
                raise RoutingError(
                    f"{event_type} on path {key!r} is already handled by {describe(existing)}"
                )
            consumer.set_handler(event_type, func)
            return func

        return register

    def channel(self, name: str) -> Callable[[Any], Any]:
        """Decorator: run the consumer for every message sent to channel ``name``.

        The consumer is a function taking one ``message`` (``message.content``
        is the dict sent), or a consumer class whose methods are named after
        message types. It runs in the serving process by default, or in
        ``wsbridge worker`` processes.
        """
        try:
            validate_channel_name(name)
        except ValueError as exc:
            raise RoutingError(f"@router.channel({name!r}): {exc}") from None
        if "!" in name:
            raise RoutingError(
                f"@router.channel({name!r}): background channel names cannot be "
                "process-specific (no '!')"
            )

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                raise RoutingError(f"@router.channel({name!r}) needs a function, got {func!r}")
            existing = self.channel_consumer(name)
            if existing is not None and not _same_definition(existing, func):
                raise RoutingError(f"channel {name!r} already has a consumer: {describe(existing)}")
            self._channels[name] = func
            return func

        return register

    def include(self, prefix: str, target: str | Router | Sequence[Any]) -> Router:
        """Mount other routes under ``prefix`` (``path()`` syntax); return them."""
        sub = include(target)
        self.add(path(prefix, sub))
        return sub

    def merge(self, other: str | Router | Sequence[Any]) -> Router:
        """Add every route and background channel of ``other`` after this router's own.

        ``other`` is a Router, a list of routes or a dotted module path (as
        for :func:`include`). It stays live: decorators that register on it
        later are seen here too.

        Raises:
            RoutingError: both routers have a different consumer for one channel.
        """
        sub = include(other)
        for name in sub.channel_names():
            mine = self.channel_consumer(name)
            theirs = sub.channel_consumer(name)
            if mine is not None and not _same_definition(mine, theirs):
                raise RoutingError(
                    f"cannot merge: channel {name!r} has consumers {describe(mine)} "
                    f"and {describe(theirs)}"
                )
        self.add(path("", sub))
        return self

    # -- lookups ---------------------------------------------------------------

    @property
    def routes(self) -> list[Route]:
        """The routes of this router (not of nested ones), in the order tried."""
        return list(self._ordered())

    def _ordered(self) -> tuple[Route, ...]:
        # Asked on every request: built once per change of the routes.
        order = self._order
        if order is None:
            routes = self._routes
            order = self._order = tuple(r for r in routes if not r.fallback) + tuple(
                r for r in routes if r.fallback
            )
        return order

    def resolve(self, scope_type: str, request_path: str) -> RouteMatch | None:
        """Find the consumer for a request path, or None (answered with 404).

        Args:
            scope_type: ``"websocket"`` or ``"http"``.
            request_path: the decoded path (``scope["path"]``), leading slash or not.
        """
        return self._resolve(scope_type, request_path.lstrip("/"), {}, ())

    def _resolve(
        self, scope_type: str, rest: str, kwargs: dict[str, Any], args: tuple[Any, ...]
    ) -> RouteMatch | None:
        for route_ in self._ordered():
            found = route_.match(rest)
            if found is None:
                continue
            remaining, new_kwargs, new_args = found
            merged = {**kwargs, **new_kwargs}
            all_args = args + new_args
            if isinstance(route_.target, Router):
                sub = route_.target._resolve(scope_type, remaining, merged, all_args)
                if sub is not None:
                    return sub
                continue
            if _scope_type(route_.target) != scope_type:
                continue
            if not route_.is_regex and remaining:
                continue
            return RouteMatch(route_.target, merged, all_args, route_)
        return None

    def channel_consumer(self, name: str) -> Callable[..., Any] | None:
        """The consumer registered for background channel ``name``, if any."""
        found = self._channels.get(name)
        if found is not None:
            return found
        for route_ in self._routes:
            if isinstance(route_.target, Router):
                found = route_.target.channel_consumer(name)
                if found is not None:
                    return found
        return None

    def channel_names(self) -> list[str]:
        """Every background channel with a consumer, nested routers included."""
        names = set(self._channels)
        for route_ in self._routes:
            if isinstance(route_.target, Router):
                names.update(route_.target.channel_names())
        return sorted(names)

    def clear(self) -> None:
        """Forget every registration (for tests)."""
        self._routes.clear()
        self._order = None
        self._channels.clear()
        self._function_routes.clear()


#: The default router the decorators in ``wsbridge`` register on.
router = Router()


# Channels 1.x entries live in .routing_v1 and loading from settings in .loading;
# these names stay importable from here (both modules import this one first).
from .loading import autodiscover, build_router, load_routes  # noqa: E402
from .routing_v1 import ContentFilter, Registration, route, route_class  # noqa: E402
