"""``scope["user"]`` from the site's session, and login/logout over a socket.

The user is found exactly as Django finds it for a page: the session the
cookie names, its ``_auth_user_id`` and backend, and the session hash check
(a password change logs the user out everywhere). It is resolved during the
handshake, so ``connect()`` can refuse anonymous users::

    from wsbridge_django.auth import login_required

    @login_required
    @router.websocket("ws/inbox/")
    class Inbox(JsonWebsocketConsumer):
        ...

``login(scope, user)`` and ``logout(scope)`` change the session in the
store, like ``django.contrib.auth.login`` / ``logout`` do for a request.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.utils.functional import SimpleLazyObject

__all__ = ["get_user", "populate_user", "login", "logout", "login_required", "ScopeRequest"]

logger = logging.getLogger("wsbridge.django")


class ScopeRequest:
    """The little of an ``HttpRequest`` that ``django.contrib.auth`` needs: ``session``."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.session = scope["session"]
        self.META: dict[str, Any] = {}
        self.user = scope.get("user")


def get_user(scope: dict[str, Any]) -> Any:
    """The user the scope's session is logged in as, or ``AnonymousUser``."""
    from django.contrib.auth import get_user as django_get_user
    from django.contrib.auth.models import AnonymousUser

    if scope.get("session") is None:
        return AnonymousUser()
    return django_get_user(ScopeRequest(scope))


def populate_user(scope: dict[str, Any]) -> None:
    """Put a lazy ``scope["user"]``: resolved on first use (wsbridge forces it at connect)."""
    if "user" not in scope:
        scope["user"] = SimpleLazyObject(lambda: get_user(scope))


def login(
    scope: dict[str, Any], user: Any, backend: str | None = None, *, cycle_key: bool = False
) -> None:
    """Log ``user`` in for this connection and save it in the session store.

    The session the browser's cookie names now holds the login, so the
    site's pages see it on the next request (server-side engines only; with
    signed-cookie sessions the login lasts as long as the connection).

    Args:
        scope: the consumer's scope (it must hold ``session``).
        user: an authenticated user.
        backend: the auth backend's dotted path; needed only when several
            are configured and ``user.backend`` is not set.
        cycle_key: give the session a new key as a page login does. The
            browser cannot receive the new key over a socket, so its pages
            would lose the session: leave it off unless the client does
            not use the cookie afterwards.

    Raises:
        ValueError: the scope has no session (``django.contrib.sessions``
            not installed).
    """
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        _get_backends,
        _get_user_session_key,
        user_logged_in,
    )
    from django.utils.crypto import constant_time_compare

    session = scope.get("session")
    if session is None:
        raise ValueError(
            "login() needs scope['session']: add django.contrib.sessions to INSTALLED_APPS"
        )
    session_auth_hash = (
        user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    )
    request = ScopeRequest(scope)
    if SESSION_KEY in session:
        other_user = _get_user_session_key(request) != user.pk
        if other_user or (
            session_auth_hash
            and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), session_auth_hash)
        ):
            # Never reuse another user's session: start an empty one.
            session.flush()
    elif cycle_key:
        session.cycle_key()
    backend = backend or getattr(user, "backend", None)
    if backend is None:
        backends = _get_backends(return_tuples=True)
        if len(backends) != 1:
            raise ValueError("several authentication backends are configured: pass backend=")
        backend = backends[0][1]
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = backend
    session[HASH_SESSION_KEY] = session_auth_hash
    session.save()
    scope["user"] = user
    user_logged_in.send(sender=user.__class__, request=None, user=user)


def logout(scope: dict[str, Any]) -> None:
    """Log the connection's user out: the session is flushed in the store.

    Every page and socket using that session is anonymous from its next
    request or handshake on.
    """
    from django.contrib.auth import user_logged_out
    from django.contrib.auth.models import AnonymousUser

    user = scope.get("user")
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    user_logged_out.send(
        sender=user.__class__ if user is not None else None, request=None, user=user
    )
    session = scope.get("session")
    if session is not None:
        session.flush()
    scope["user"] = AnonymousUser()


def login_required(consumer: Any) -> Any:
    """Refuse the handshake (HTTP 403, one log line) unless the user is logged in.

    Decorates a consumer class (subclasses are covered too) or a Channels
    1.x ``websocket.connect`` function consumer; for a function, apply it
    under the routing decorator so the route serves the checked function.
    """
    if isinstance(consumer, type):
        # Wrap the dispatch entry rather than connect(): a subclass that
        # overrides connect() stays protected, and no group is joined first.
        consumer_class: Any = consumer  # any class with websocket_connect
        original = consumer_class.websocket_connect

        @functools.wraps(original)
        def websocket_connect(self: Any, message: dict[str, Any]) -> None:
            if not _authenticated(self.scope):
                self.close()
                return
            original(self, message)

        consumer_class.websocket_connect = websocket_connect
        return consumer

    @functools.wraps(consumer)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        if not _authenticated(message.scope):
            message.reply_channel.send({"close": True})
            return None
        return consumer(message, *args, **kwargs)

    return inner


def _authenticated(scope: dict[str, Any]) -> bool:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return True
    logger.info(
        "refused %s %s: login required (user is anonymous%s)",
        scope.get("transport", "websocket"),
        scope.get("path"),
        ", session cookie present but no live session"
        if scope.get("wsbridge.stale_session")
        else "",
    )
    return False
