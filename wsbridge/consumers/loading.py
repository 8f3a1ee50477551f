"""Routes from settings: import consumer modules, load declared routing modules.

A site lists its consumer modules once (``WSBRIDGE["CONSUMERS"]``,
``--consumers``) and its optional routing module (``WSBRIDGE["ROUTING"]``,
``--routing``); :func:`build_router` turns both into the Router a server or
worker uses. These names are also importable from
:mod:`wsbridge.consumers.routing`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..exceptions import RoutingError
from .routing import Router, include, router

__all__ = [
    "ROUTING_NAMES",
    "load_routes",
    "as_router",
    "import_target",
    "autodiscover",
    "build_router",
]

#: Names :func:`load_routes` looks for in a routing module, in this order.
ROUTING_NAMES = ("router", "routes", "websocket_urlpatterns", "urlpatterns", "channel_routing")


def load_routes(dotted: str) -> Router:
    """Import ``dotted`` and return the Router it names or defines.

    ``"myapp.routing"`` (a module with one of ``router``, ``routes``,
    ``websocket_urlpatterns``, ``urlpatterns``, ``channel_routing``), or one
    name in it: ``"myapp.routing:routes"``, or ``"myapp.routing.routes"`` as
    Channels 1.x wrote it. Lists become Routers; a Channels 1.x dict
    ``{channel: consumer or "dotted.path"}`` becomes one ``route()`` each.

    Raises:
        RoutingError: the module does not exist, or defines none of them.
    """
    module, attr = _module_and_attr(dotted, "routing module")
    candidates = [attr] if attr else list(ROUTING_NAMES)
    for name in candidates:
        value = getattr(module, name, None)
        if value is None:
            continue
        routes = as_router(value)
        if routes is None:
            raise RoutingError(f"{module.__name__}.{name} is a {type(value).__name__}, not routes")
        return routes
    raise RoutingError(f"{dotted} defines none of: {', '.join(candidates)}")


def as_router(value: Any) -> Router | None:
    """``value`` as a Router (a Router, a list of routes, a 1.x dict), or None."""
    if isinstance(value, Router):
        return value
    if isinstance(value, (list, tuple)):
        return Router(routes=list(value))
    if isinstance(value, Mapping):
        from .routing import route

        return Router(routes=[route(channel, target) for channel, target in value.items()])
    return None


def import_target(dotted: str, what: str = "consumer") -> Any:
    """The object ``dotted`` names: ``"pkg.module.attr"`` or ``"pkg.module:attr"``.

    Channels 1.x routing names consumers by dotted path
    (``route("websocket.connect", "chat.consumers.ws_connect")``); both
    spellings are accepted, and ``attr`` may be nested (``"Cls.method"``
    after a colon).

    Raises:
        RoutingError: the module cannot be found or has no such attribute.
    """
    module, attr = _module_and_attr(dotted, f"{what} module", need_attr=True)
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise RoutingError(
                f"cannot import {what} {dotted!r}: {module.__name__!r} has no {attr!r}"
            ) from None
    return value


def _module_and_attr(dotted: str, what: str, *, need_attr: bool = False) -> tuple[Any, str]:
    """Split ``dotted`` into an imported module and the attribute path after it.

    ``"a.b:c"`` is module ``a.b``, attribute ``c``. Without a colon the whole
    name is tried as a module first (unless an attribute is needed), then
    ``"a.b.c"`` as module ``a.b`` and attribute ``c``.
    """
    if not isinstance(dotted, str) or not dotted.strip(". :"):
        raise RoutingError(f"{what}: expected a dotted path, got {dotted!r}")
    if ":" in dotted:
        module_name, _, attr = dotted.partition(":")
        return _import(module_name, what), attr
    if not need_attr:
        try:
            return importlib.import_module(dotted), ""
        except ModuleNotFoundError as exc:
            # Not a module (or a parent is missing: the attribute form says which);
            # an import failing inside an existing module keeps its traceback.
            if not exc.name or not (dotted == exc.name or dotted.startswith(exc.name + ".")):
                raise
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise RoutingError(f"{what}: {dotted!r} names no module (use 'module.attr')")
    return _import(module_name, what), attr


def _import(module_name: str, what: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module *itself* becomes a RoutingError; an import
        # failing inside it keeps its own traceback, which is what to fix.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise RoutingError(
                f"cannot import {what} {module_name!r}: no module named {exc.name!r} "
                "(check the dotted path and sys.path)"
            ) from exc
        raise


def autodiscover(modules: str | Iterable[str], target: Router | None = None) -> Router:
    """Import each consumer module so its decorators register; return the router.

    Args:
        modules: dotted module names, as a list or one comma-separated string.
        target: the router the decorators register on (default ``wsbridge.router``);
            it is only returned, modules choose where they register.

    Raises:
        RoutingError: a listed module does not exist.
    """
    if isinstance(modules, str):
        modules = [m for m in (part.strip() for part in modules.split(",")) if m]
    for module_name in modules:
        _import(module_name, "consumer module")
    return target if target is not None else router


def build_router(
    routing: str | Router | Sequence[Any] | None = None, consumers: str | Iterable[str] = ()
) -> Router:
    """The router a server or worker uses, from settings or command-line options.

    Imports every module in ``consumers`` (their decorators register on
    ``wsbridge.router``), then returns the declared ``routing`` (a dotted
    path, a Router or a list) followed by the default router's routes, or
    the default router alone when nothing is declared.
    """
    autodiscover(consumers)
    if routing is None:
        return router
    declared = include(routing)
    if declared is router:
        return router
    combined = Router()
    combined.merge(declared)
    combined.merge(router)
    return combined
