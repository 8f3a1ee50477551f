"""The router a Django site serves: its consumers, with Django around every call.

:func:`get_router` returns a :class:`DjangoRouter`: the routes of
``WSBRIDGE["ROUTING"]`` (when set) and of the decorators on
``wsbridge.router``. Every consumer it resolves is wrapped so that:

* the handshake is refused (403, one log line) when ``Origin`` is not
  allowed (``ALLOWED_HOSTS`` by default);
* ``scope["session"]`` and ``scope["user"]`` come from the site's cookie,
  the user being resolved during the handshake;
* database connections are handled around each call (:mod:`.db`).

Background channel consumers get the database handling too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from wsbridge.consumers.routing import RouteMatch, Router, include, path
from wsbridge.consumers.routing import router as default_router
from wsbridge.exceptions import StopConsumer

from . import db
from .origins import header, origin_allowed
from .signals import consumer_finished, consumer_started

__all__ = ["DjangoRouter", "DjangoConsumer", "get_router", "prepare_scope"]

logger = logging.getLogger("wsbridge.django")


def prepare_scope(scope: dict[str, Any]) -> None:
    """Add ``session`` and ``user`` to a scope (kept when already there)."""
    from django.apps import apps

    if "session" not in scope and apps.is_installed("django.contrib.sessions"):
        from .sessions import session_from_scope

        scope["session"] = session_from_scope(scope)
    if apps.is_installed("django.contrib.auth"):
        from .auth import populate_user

        populate_user(scope)


class DjangoConsumer:
    """Wraps a consumer class: what :class:`~wsbridge.consumers.runner.Connection` builds.

    Transports and the Communicator only call ``build(scope, **kwargs)``;
    the instance they get is the site's own consumer, whose ``dispatch``
    runs inside the Django handling.
    """

    def __init__(self, consumer_class: Any) -> None:
        self.consumer_class = consumer_class
        self.scope_type = getattr(consumer_class, "scope_type", "websocket")
        wrapper: Any = self  # not a function: takes the class's name and docstring
        functools.update_wrapper(wrapper, consumer_class, updated=())

    def build(self, scope: dict[str, Any], **kwargs: Any) -> Any:
        prepare_scope(scope)
        instance = self.consumer_class.build(scope, **kwargs)
        instance.dispatch = _DjangoDispatch(instance, instance.dispatch)
        return instance

    def __repr__(self) -> str:
        return f"<DjangoConsumer {self.consumer_class.__qualname__}>"


class _DjangoDispatch:
    """``instance.dispatch`` with the Origin check, user resolution and DB handling."""

    def __init__(self, instance: Any, dispatch: Callable[[dict[str, Any]], None]) -> None:
        self.instance = instance
        self.dispatch = dispatch
        self.refused = False

    def __call__(self, message: dict[str, Any]) -> None:
        scope = self.instance.scope
        kind = message.get("type")
        if self.refused:
            if kind in ("websocket.disconnect", "http.disconnect"):
                raise StopConsumer()
            return
        if kind == "websocket.connect" and not self._handshake_allowed(scope):
            self.refused = True
            self.instance.base_send({"type": "websocket.close", "code": 1008})
            return
        sender = type(self.instance)
        consumer_started.send(sender=sender, scope=scope, message_type=kind)
        try:
            with db.consumer_call(scope):
                if kind == "websocket.connect":
                    _resolve_user(scope)
                    _share_user_v1(self.instance)
                self.dispatch(message)
        finally:
            consumer_finished.send(sender=sender, scope=scope, message_type=kind)

    def _handshake_allowed(self, scope: dict[str, Any]) -> bool:
        from .conf import allowed_origins

        raw = header(scope, b"origin")
        origin = raw.decode("latin-1") if raw is not None else None
        if origin_allowed(origin, allowed_origins()):
            return True
        client = scope.get("client") or ["?", 0]
        logger.warning(
            "refused %s handshake for %s from %s: Origin %r is not allowed "
            "(ALLOWED_HOSTS / WSBRIDGE['ALLOWED_ORIGINS'])",
            scope.get("transport", "websocket"),
            scope.get("path"),
            client[0],
            origin,
        )
        return False


def _resolve_user(scope: dict[str, Any]) -> None:
    # Resolved here, inside the handshake, so a failing session store makes
    # this handshake fail (500, logged) instead of a later message.
    from .sessions import session_cookie, session_is_usable

    user = scope.get("user")
    if user is not None:
        getattr(user, "is_authenticated", None)
    if session_cookie(scope) is not None and not session_is_usable(scope):
        scope["wsbridge.stale_session"] = True
        logger.info(
            "%s %s: the session cookie names no live session (expired, tampered, or "
            "logged out); the connection is anonymous",
            scope.get("transport", "websocket"),
            scope.get("path"),
        )


#: Channels 1.x generic consumer flags that put the user in the channel session.
_V1_USER_FLAGS = ("http_user", "channel_session_user", "http_user_and_session")


def _share_user_v1(instance: Any) -> None:
    """Channels 1.x ``http_user = True``: copy the login into the channel session.

    Consumers of other channels (a binding routed on ``binding.notes``, a
    ``chat.receive`` worker) then find the user by the message's reply
    channel, as ``channel_session_user`` does.
    """
    if not any(getattr(type(instance), flag, False) for flag in _V1_USER_FLAGS):
        return
    scope, name = instance.scope, instance.channel_name
    if not name or scope.get("session") is None:
        return
    from .decorators import transfer_user
    from .sessions import save_channel_session, session_for_reply_channel

    store = session_for_reply_channel(name)
    if store is None:
        return
    transfer_user(scope["session"], store)
    if store.modified:
        save_channel_session(store)


def _wrap_channel_consumer(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def run(message: Any, *args: Any, **kwargs: Any) -> Any:
        channel = getattr(getattr(message, "channel", None), "name", None)
        consumer_started.send(sender=func, scope=None, message_type=channel)
        try:
            with db.consumer_call(getattr(message, "scope", None)):
                return func(message, *args, **kwargs)
        finally:
            consumer_finished.send(sender=func, scope=None, message_type=channel)

    return run


class DjangoRouter(Router):
    """A Router over another router's registrations, resolving to Django-wrapped consumers.

    It shares the inner router's tables (routes added to either later are
    seen by both), so decorators used after start-up still count.
    """

    def __init__(self, inner: Router) -> None:
        super().__init__()
        self.inner = inner
        self._routes = inner._routes
        self._channels = inner._channels
        self._function_routes = inner._function_routes
        self._wrapped: dict[Any, DjangoConsumer] = {}
        self._wrapped_channels: dict[Any, Callable[..., Any]] = {}

    def resolve(self, scope_type: str, request_path: str) -> RouteMatch | None:
        match = super().resolve(scope_type, request_path)
        if match is None or isinstance(match.consumer, DjangoConsumer):
            return match
        wrapped = self._wrapped.get(match.consumer)
        if wrapped is None:
            wrapped = self._wrapped[match.consumer] = DjangoConsumer(match.consumer)
        return RouteMatch(wrapped, match.kwargs, match.args, match.route)

    def channel_consumer(self, name: str) -> Callable[..., Any] | None:
        func = super().channel_consumer(name)
        if func is None:
            return None
        wrapped = self._wrapped_channels.get(func)
        if wrapped is None:
            wrapped = self._wrapped_channels[func] = _wrap_channel_consumer(func)
        return wrapped


def get_router() -> DjangoRouter:
    """The site's router: ``WSBRIDGE["ROUTING"]`` first, then the decorator routes.

    Without ``WSBRIDGE["ROUTING"]``, a Channels 1.x
    ``CHANNEL_LAYERS["default"]["ROUTING"]`` is used, with a deprecation
    warning naming the setting to write instead.
    """
    from .conf import wsbridge_settings

    routing = wsbridge_settings.ROUTING or _legacy_layer_routing()
    if not routing:
        return DjangoRouter(default_router)
    combined = Router(routes=[path("", include(routing)), path("", default_router)])
    return DjangoRouter(combined)


def _legacy_layer_routing() -> Any:
    """``ROUTING`` from the default layer's settings (Channels 1.x), or None."""
    from wsbridge.exceptions import warn_deprecated

    from .conf import layer_settings

    spec = (layer_settings() or {}).get("default") or {}
    routing = spec.get("ROUTING") if isinstance(spec, dict) else None
    if routing:
        shown = routing if isinstance(routing, str) else "your routing module"
        warn_deprecated(
            f'CHANNEL_LAYERS["default"]["ROUTING"] is the Channels 1.x place for routing; '
            f'write WSBRIDGE = {{"ROUTING": "{shown}"}} instead (it is used as it is for now)'
        )
    return routing
