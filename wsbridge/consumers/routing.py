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
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import RoutingError
from ..layers.base import validate_channel_name

__all__ = [
    "Router",
    "Route",
    "RouteMatch",
    "path",
    "re_path",
    "include",
    "URLRouter",
    "router",
    "load_routes",
    "WEBSOCKET_EVENTS",
]

#: Event types a Channels 1.x style function consumer can be registered for.
WEBSOCKET_EVENTS = ("websocket.connect", "websocket.receive", "websocket.disconnect")


# -- converters (the Django path() converters, without Django) --------------


@dataclass(frozen=True)
class _Converter:
    regex: str
    to_python: Callable[[str], Any]


CONVERTERS: dict[str, _Converter] = {
    "str": _Converter(r"[^/]+", str),
    "int": _Converter(r"[0-9]+", int),
    "slug": _Converter(r"[-a-zA-Z0-9_]+", str),
    "uuid": _Converter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid.UUID
    ),
    "path": _Converter(r".+", str),
}

_PARAM_RE = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def register_converter(name: str, regex: str, to_python: Callable[[str], Any] = str) -> None:
    """Add a path converter usable as ``<name:value>`` in ``path()`` patterns."""
    CONVERTERS[name] = _Converter(regex, to_python)


def _compile_path(pattern: str, *, end: bool) -> tuple[re.Pattern[str], dict[str, _Converter]]:
    parts = ["^"]
    converters: dict[str, _Converter] = {}
    pos = 0
    for m in _PARAM_RE.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        pos = m.end()
        name = m.group("name")
        if not name.isidentifier():
            raise RoutingError(f"path {pattern!r}: {name!r} is not a valid parameter name")
        conv_name = m.group("converter") or "str"
        try:
            converter = CONVERTERS[conv_name]
        except KeyError:
            raise RoutingError(
                f"path {pattern!r}: unknown converter {conv_name!r} "
                f"(known: {', '.join(sorted(CONVERTERS))})"
            ) from None
        if name in converters:
            raise RoutingError(f"path {pattern!r}: parameter {name!r} appears twice")
        converters[name] = converter
        parts.append(f"(?P<{name}>{converter.regex})")
    parts.append(re.escape(pattern[pos:]))
    if end:
        parts.append(r"\Z")
    return re.compile("".join(parts)), converters


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
        return {"args": self.args, "kwargs": self.kwargs}


@dataclass
class Route:
    """One pattern and what it leads to: a consumer or a nested set of routes."""

    pattern: str
    target: Any
    is_regex: bool = False
    name: str | None = None
    full_path: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False)
    converters: dict[str, _Converter] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        nested = isinstance(self.target, (Router, list, tuple))
        pattern = self.pattern
        if self.is_regex:
            if pattern.startswith("^/") or pattern.startswith("/"):
                self.full_path = True
            try:
                self.regex = re.compile(pattern)
            except re.error as exc:
                raise RoutingError(f"re_path {pattern!r} is not a valid regex: {exc}") from None
        else:
            if pattern.startswith("/"):
                pattern = pattern[1:]
            self.regex, self.converters = _compile_path(pattern, end=not nested)
        if nested and isinstance(self.target, (list, tuple)):
            self.target = Router(routes=self.target)

    def match(self, path: str) -> tuple[str, dict[str, Any], tuple[Any, ...]] | None:
        """Match ``path`` (no leading slash); return (rest, kwargs, args) or None."""
        subject = "/" + path if self.full_path else path
        m = self.regex.match(subject) if self.is_regex else self.regex.match(path)
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
        args = () if kwargs else tuple(g for g in m.groups() if g is not None)
        rest = subject[m.end() :]
        if self.full_path and rest.startswith("/"):
            rest = rest[1:]
        return rest, kwargs, args


def path(pattern: str, target: Any, *, name: str | None = None) -> Route:
    """A route with Django ``path()`` syntax: ``"ws/chat/<str:room>/"``."""
    return Route(pattern, target, is_regex=False, name=name)


def re_path(pattern: str, target: Any, *, name: str | None = None) -> Route:
    """A route with a regular expression; named groups become kwargs."""
    return Route(pattern, target, is_regex=True, name=name)


def include(target: str | Router | Sequence[Route]) -> Router:
    """Nest routes under a prefix: ``path("api/", include("myapp.routing"))``.

    ``target`` is a Router, a list of routes, or the dotted path of a module
    that defines ``routes`` (or ``websocket_urlpatterns``, or ``router``).
    """
    if isinstance(target, str):
        return load_routes(target)
    if isinstance(target, Router):
        return target
    return Router(routes=list(target))


def URLRouter(routes: Sequence[Route]) -> Router:  # noqa: N802 - the Channels name
    """A Router from a list of routes, as Channels' ``URLRouter`` builds one."""
    return Router(routes=list(routes))


def load_routes(dotted: str) -> Router:
    """Import ``dotted`` and return the Router it names or defines.

    ``"myapp.routing"`` (a module with ``router``, ``routes`` or
    ``websocket_urlpatterns``) or ``"myapp.routing:routes"``.
    """
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RoutingError(f"cannot import routing module {module_name!r}: {exc}") from exc
    candidates = [attr] if attr else ["router", "routes", "websocket_urlpatterns", "urlpatterns"]
    for name in candidates:
        value = getattr(module, name, None)
        if value is None:
            continue
        if isinstance(value, Router):
            return value
        if isinstance(value, (list, tuple)):
            return Router(routes=list(value))
        raise RoutingError(f"{module_name}.{name} is a {type(value).__name__}, not routes")
    raise RoutingError(f"{dotted} defines none of: {', '.join(candidates)}")


# -- the router --------------------------------------------------------------


def _scope_type(target: Any) -> str | None:
    return getattr(target, "scope_type", None)


class Router:
    """Maps paths to consumers and channel names to background consumers.

    Decorators register and return the decorated object unchanged, so a
    consumer module only needs to be imported once for its routes to exist.
    """

    def __init__(self, routes: Iterable[Route] | None = None) -> None:
        self._routes: list[Route] = list(routes or [])
        self._channels: dict[str, Callable[..., Any]] = {}
        # Channels 1.x function consumers: path regex -> {event type: function}
        self._function_routes: dict[str, Any] = {}

    # -- registration --------------------------------------------------------

    def add(self, route: Route) -> Route:
        """Append a route (from ``path()`` / ``re_path()``)."""
        self._routes.append(route)
        return route

    def websocket(self, pattern: str, *, regex: bool = False, name: str | None = None):
        """Decorator: serve WebSocket (and long-poll) connections on ``pattern``.

        ``pattern`` uses ``path()`` syntax, or is a regex with ``regex=True``.
        """

        def register(consumer: Any) -> Any:
            if _scope_type(consumer) != "websocket":
                raise RoutingError(
                    f"@router.websocket needs a WebsocketConsumer subclass, got {consumer!r}"
                )
            self.add(Route(pattern, consumer, is_regex=regex, name=name))
            return consumer

        return register

    def http(self, pattern: str, *, regex: bool = False, name: str | None = None):
        """Decorator: take over plain HTTP requests on ``pattern`` (HttpConsumer)."""

        def register(consumer: Any) -> Any:
            target = consumer
            if _scope_type(consumer) != "http":
                if not callable(consumer):
                    raise RoutingError(f"@router.http needs an HttpConsumer or function, got {consumer!r}")
                from .http import function_http_consumer

                target = function_http_consumer(consumer)
            self.add(Route(pattern, target, is_regex=regex, name=name))
            return consumer

        return register

    def on(self, event_type: str, path: str | None = None):
        """Decorator: a Channels 1.x function consumer for ``event_type``.

        ``path`` is a regex matched against the full request path (for
        example ``r"^/chat/$"``); without it every otherwise unrouted
        WebSocket path matches. The function takes one ``message``.
        """
        if event_type not in WEBSOCKET_EVENTS:
            raise RoutingError(
                f"@router.on takes one of {', '.join(WEBSOCKET_EVENTS)}, not {event_type!r}"
            )

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            from .message import FunctionConsumer

            key = path if path is not None else ".*"
            consumer = self._function_routes.get(key)
            if consumer is None:
                consumer = FunctionConsumer.for_path(key)
                self._function_routes[key] = consumer
                pattern = key if (key.startswith("^/") or key.startswith("/")) else key
                route = Route(pattern, consumer, is_regex=True)
                route.full_path = True
                self.add(route)
            if event_type in consumer.handlers:
                raise RoutingError(f"{event_type} on path {key!r} is already handled")
            consumer.handlers[event_type] = func
            return func

        return register

    def channel(self, name: str):
        """Decorator: run the function for every message sent to channel ``name``.

        The function takes one ``message`` (``message.content`` is the dict
        sent). It runs in the serving process by default, or in
        ``wsbridge worker`` processes.
        """
        validate_channel_name(name)
        if "!" in name:
            raise RoutingError("background channel names cannot be process-specific (no '!')")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._channels and self._channels[name] is not func:
                raise RoutingError(f"channel {name!r} already has a consumer")
            self._channels[name] = func
            return func

        return register

    def include(self, prefix: str, target: str | Router | Sequence[Route]) -> Router:
        """Mount other routes under ``prefix`` (``path()`` syntax)."""
        sub = include(target)
        self.add(path(prefix, sub))
        return sub

    # -- lookups ---------------------------------------------------------------

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def iter_routes(self) -> Iterator[Route]:
        yield from self._routes

    def resolve(self, scope_type: str, request_path: str) -> RouteMatch | None:
        """Find the consumer for a request path, or None (answered with 404)."""
        return self._resolve(scope_type, request_path.lstrip("/"), {}, ())

    def _resolve(
        self, scope_type: str, rest: str, kwargs: dict[str, Any], args: tuple[Any, ...]
    ) -> RouteMatch | None:
        for route in self._routes:
            found = route.match(rest)
            if found is None:
                continue
            remaining, new_kwargs, new_args = found
            merged = {**kwargs, **new_kwargs}
            all_args = args + new_args
            if isinstance(route.target, Router):
                sub = route.target._resolve(scope_type, remaining, merged, all_args)
                if sub is not None:
                    return sub
                continue
            if _scope_type(route.target) != scope_type:
                continue
            if not route.is_regex and remaining:
                continue
            return RouteMatch(route.target, merged, all_args, route)
        return None

    def channel_consumer(self, name: str) -> Callable[..., Any] | None:
        """The function registered for background channel ``name``, if any."""
        found = self._channels.get(name)
        if found is not None:
            return found
        for route in self._routes:
            if isinstance(route.target, Router):
                found = route.target.channel_consumer(name)
                if found is not None:
                    return found
        return None

    def channel_names(self) -> list[str]:
        """Every background channel with a consumer, nested routers included."""
        names = set(self._channels)
        for route in self._routes:
            if isinstance(route.target, Router):
                names.update(route.target.channel_names())
        return sorted(names)

    def clear(self) -> None:
        """Forget every registration (for tests)."""
        self._routes.clear()
        self._channels.clear()
        self._function_routes.clear()


#: The default router the decorators in ``wsbridge`` register on.
router = Router()
