"""Routes from settings: import consumer modules, load declared routing modules.

A site lists its consumer modules once (``WSBRIDGE["CONSUMERS"]``,
``--consumers``) and its optional routing module (``WSBRIDGE["ROUTING"]``,
``--routing``); :func:`build_router` turns both into the Router a server or
worker uses. These names are also importable from
:mod:`wsbridge.consumers.routing`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from ..exceptions import RoutingError
from .routing import Router, include, router

__all__ = ["ROUTING_NAMES", "load_routes", "autodiscover", "build_router"]

#: Names :func:`load_routes` looks for in a routing module, in this order.
ROUTING_NAMES = ("router", "routes", "websocket_urlpatterns", "urlpatterns", "channel_routing")


def load_routes(dotted: str) -> Router:
    """Import ``dotted`` and return the Router it names or defines.

    ``"myapp.routing"`` (a module with one of ``router``, ``routes``,
    ``websocket_urlpatterns``, ``urlpatterns``, ``channel_routing``) or
    ``"myapp.routing:routes"`` (that name). Lists become Routers.

    Raises:
        RoutingError: the module does not exist, or defines none of them.
    """
    module_name, _, attr = dotted.partition(":")
    module = _import(module_name, "routing module")
    candidates = [attr] if attr else list(ROUTING_NAMES)
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
