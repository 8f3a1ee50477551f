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

* ``channel_session``: ``message.channel_session``, one per connection,
  in the session store keyed by the reply channel (Channels 1.x's layout):
  a consumer of another channel (``Channel("chat.receive").send({...,
  "reply_channel": ...})``), in any process, sees the connection's session,
  and ``channel_session_user`` its user. It is saved after the consumer
  when changed, and deleted after a ``websocket.disconnect`` consumer
  decorated with it; otherwise it expires with ``SESSION_COOKIE_AGE``
  (``manage.py clearsessions`` removes expired ones). ``CHANNEL_SESSION_ENGINE``
  picks another engine (a cache, say) than ``SESSION_ENGINE``. With
  signed-cookie sessions it is kept with the connection only.
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
import logging
from collections.abc import Callable
from typing import Any

# One implementation for both import paths (wsbridge and the Django app).
from wsbridge.consumers.message import enforce_ordering

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

logger = logging.getLogger("wsbridge.django")

Consumer = Callable[..., Any]


def _channel_session(message: Any) -> Any:
    """The channel session for ``message``'s reply channel (see the module docs)."""
    from .sessions import ConnectionSession, session_for_reply_channel

    reply = getattr(message, "reply_channel", None)
    name = getattr(reply, "name", None) or message.content.get("reply_channel")
    scope = message.scope
    if not name and not scope.get("type"):
        raise ValueError(
            f"@channel_session on {message.channel.name!r}: the message has no reply_channel; "
            "it can only be used on messages that carry one"
        )
    # A connection without a channel name (no layer) keeps its session with it.
    session = session_for_reply_channel(name) if name else None
    if session is not None:
        return session
    if not scope.get("type"):
        _warn_no_store(message.channel.name)
    session = scope.get(CHANNEL_SESSION_SCOPE_KEY)
    if session is None:
        session = scope[CHANNEL_SESSION_SCOPE_KEY] = ConnectionSession()
    return session


def _warn_no_store(channel: str) -> None:
    if channel in _warned_no_store:
        return
    _warned_no_store.add(channel)
    logger.warning(
        "@channel_session on background channel %r: signed-cookie sessions cannot be looked "
        "up by reply channel, so this consumer gets an empty session; set "
        "CHANNEL_SESSION_ENGINE to a server-side engine (db, cache, cached_db)",
        channel,
    )


_warned_no_store: set[str] = set()


def channel_session(func: Consumer) -> Consumer:
    """Give the consumer ``message.channel_session``: the connection's, from the session store.

    Saved after the consumer when it changed; deleted after a
    ``websocket.disconnect`` consumer.
    """

    @functools.wraps(func)
    def inner(message: Any, *args: Any, **kwargs: Any) -> Any:
        from .sessions import save_channel_session

        if hasattr(message, "channel_session"):  # stacked decorators share one
            return func(message, *args, **kwargs)
        session = message.channel_session = _channel_session(message)
        try:
            return func(message, *args, **kwargs)
        finally:
            if message.channel.name == "websocket.disconnect":
                session.delete()
            elif session.modified:
                save_channel_session(session)

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


def _scope_user(scope: dict[str, Any]) -> Any:
    user = scope.get("user")
    if user is None:
        from .auth import get_user

        user = get_user(scope)
    return user


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()
