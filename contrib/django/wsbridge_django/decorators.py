"""The Channels 1.x session decorators, for function consumers taking a ``message``.

Ported code changes its imports only::

    from wsbridge import router
    from wsbridge_django.decorators import channel_session_user_from_http, channel_session_user

    @router.on("websocket.connect", path=r"^/chat/$")
    @channel_session_user_from_http
    def ws_connect(message):
        message.channel_session["room"] = "lobby"
        message.reply_channel.send({"accept": True})

    @router.on("websocket.receive", path=r"^/chat/$")
    @channel_session_user
    def ws_receive(message):
        Group(message.channel_session["room"]).send({"text": f"{message.user}: {message['text']}"})

What each sets on the message:

* ``channel_session``: ``message.channel_session``, one per connection
  (kept with the connection in the serving process; see
  :class:`~wsbridge_django.sessions.ConnectionSession`).
* ``http_session``: ``message.http_session``, the site's session from the
  cookie (None when the client sent no session cookie). Unlike Channels 1.x
  it works on every message, not only on connect.
* ``http_session_user``: also ``message.user``, from that session.
* ``channel_session_user``: ``message.channel_session`` and ``message.user``,
  the user stored in the channel session.
* ``channel_session_user_from_http``: on connect, copies the user from the
  HTTP session into the channel session; then as ``channel_session_user``.
* ``enforce_ordering``: nothing to do. wsbridge already handles a
  connection's messages one at a time, in order; the decorator is kept so
  code ports unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = [
    "channel_session",
    "http_session",
    "http_session_user",
    "channel_session_user",
    "channel_session_user_from_http",
    "enforce_ordering",
    "transfer_user",
]

CHANNEL_SESSION_SCOPE_KEY = "wsbridge.channel_session"

Consumer = Callable[..., Any]


def _channel_session(message: Any) -> Any:
    from .sessions import ConnectionSession

    scope = message.scope
    session = scope.get(CHANNEL_SESSION_SCOPE_KEY)
    if session is None:
        session = scope[CHANNEL_SESSION_SCOPE_KEY] = ConnectionSession()
    return session


def channel_session(func: Consumer) -> Consumer:
    """Give the consumer ``message.channel_session``, kept for the connection's lifetime."""

    @functools.wraps(func)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        message.channel_session = _channel_session(message)
        return func(message, *args, **kwargs)

    return inner


def http_session(func: Consumer) -> Consumer:
    """Give the consumer ``message.http_session``: the site's session, or None without a cookie."""

    @functools.wraps(func)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        from .sessions import session_cookie

        session = message.scope.get("session")
        message.http_session = session if session_cookie(message.scope) is not None else None
        return func(message, *args, **kwargs)

    return inner


def http_session_user(func: Consumer) -> Consumer:
    """``http_session`` plus ``message.user`` (``AnonymousUser`` when not logged in)."""

    @http_session
    @functools.wraps(func)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        message.user = _scope_user(message.scope)
        return func(message, *args, **kwargs)

    return inner


def channel_session_user(func: Consumer) -> Consumer:
    """``channel_session`` plus ``message.user``, the user stored in the channel session."""

    @channel_session
    @functools.wraps(func)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        from .auth import get_user

        session = message.channel_session
        message.user = (
            get_user({"session": session}) if session.get("_auth_user_id") else _anonymous()
        )
        return func(message, *args, **kwargs)

    return inner


def channel_session_user_from_http(func: Consumer) -> Consumer:
    """Copy the HTTP session's user into the channel session; then as ``channel_session_user``."""

    @http_session_user
    @channel_session
    @functools.wraps(func)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        if message.http_session is not None:
            transfer_user(message.http_session, message.channel_session)
        return channel_session_user(func)(message, *args, **kwargs)

    return inner


def transfer_user(from_session: Any, to_session: Any) -> None:
    """Copy the login (user id, backend, session hash) from one session to another."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    for key in (SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY):
        if key in from_session:
            to_session[key] = from_session[key]


def enforce_ordering(func: Consumer | None = None, *, slight: bool = False) -> Any:
    """Accepted for Channels 1.x code; returns the consumer unchanged.

    wsbridge delivers a connection's messages to its handlers one at a
    time, in arrival order, so there is nothing left to enforce. Usable bare
    (``@enforce_ordering``) or called (``@enforce_ordering(slight=True)``).
    """
    if func is None:
        return lambda f: f
    return func


def _scope_user(scope: dict[str, Any]) -> Any:
    user = scope.get("user")
    if user is None:
        from .auth import get_user

        user = get_user(scope)
    return user


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()
