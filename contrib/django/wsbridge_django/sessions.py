"""``scope["session"]`` from the site's session cookie, for any session engine.

The session named by the request's ``SESSION_COOKIE_NAME`` cookie is opened
with the site's own ``SESSION_ENGINE`` (database, cache, cached_db, file or
signed cookies) when the handshake arrives. It loads lazily, on first use.
A consumer that changes it calls ``scope["session"].save()`` to persist the
change (a socket cannot send a ``Set-Cookie`` back, so the browser keeps
the cookie it had: the change reaches its pages only with a server-side
engine).

The Channels 1.x decorators for function consumers live in
:mod:`wsbridge_django.decorators` and are re-exported here. Their channel
sessions live in the session store, keyed by the connection's reply channel
(:func:`session_for_reply_channel`), as in Channels 1.x.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import import_module
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

__all__ = [
    "SESSION_SCOPE_KEY",
    "session_from_scope",
    "session_cookie",
    "ConnectionSession",
    "channel_session_key",
    "channel_session_engine",
    "session_for_reply_channel",
    "save_channel_session",
    "channel_session",
    "http_session",
    "http_session_user",
    "channel_session_user",
    "channel_session_user_from_http",
    "enforce_ordering",
]

logger = logging.getLogger("wsbridge.django")

#: The scope key that holds the connection's Django session (``scope["session"]``).
SESSION_SCOPE_KEY = "session"


def session_cookie(scope: dict[str, Any]) -> str | None:
    """The value of the site's session cookie in ``scope``, or None."""
    from django.conf import settings

    value = (scope.get("cookies") or {}).get(settings.SESSION_COOKIE_NAME)
    return value or None


def session_store_class() -> type[SessionBase]:
    """The ``SessionStore`` of the configured ``SESSION_ENGINE``."""
    from django.conf import settings

    store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    return store


def session_from_scope(scope: dict[str, Any]) -> SessionBase:
    """Open (lazily) the session the scope's cookie names; an empty one without a cookie.

    The returned object is the engine's own ``SessionStore``: nothing is read
    until the consumer (or the auth layer) first touches it.
    """
    return session_store_class()(session_cookie(scope))


def session_is_usable(scope: dict[str, Any]) -> bool:
    """False when a session cookie came but names no live session.

    That is an expired session, a tampered or forged cookie, or a session
    ended by logout elsewhere. Loads the session.
    """
    session = scope.get(SESSION_SCOPE_KEY)
    if session is None or session_cookie(scope) is None:
        return True
    # keys() loads it; engines answer an unknown, expired or forged key with
    # an empty session (Django never stores an empty one for a cookie).
    return bool(list(session.keys()))


def channel_session_key(reply_channel: str) -> str:
    """The session key of a connection's channel session: Channels 1.x's derivation.

    ``"chn"`` and 29 hex digits of the SHA-1 of the reply channel name: any
    process that sees a message carrying ``reply_channel`` finds the session.
    """
    return "chn" + hashlib.sha1(reply_channel.encode("utf-8")).hexdigest()[:29]


def channel_session_engine() -> str:
    """The engine channel sessions use: ``CHANNEL_SESSION_ENGINE`` (1.x) or ``SESSION_ENGINE``."""
    from django.conf import settings

    engine: str = getattr(settings, "CHANNEL_SESSION_ENGINE", None) or settings.SESSION_ENGINE
    return engine


def session_for_reply_channel(reply_channel: str) -> SessionBase | None:
    """The channel session of the connection whose reply channel is ``reply_channel``.

    It lives in the session store (:func:`channel_session_engine`), so a
    consumer of another channel, in any process, sees what the connection's
    handlers stored. It loads lazily; save it with :func:`save_channel_session`.
    Returns None with signed-cookie sessions, which cannot be looked up by key.
    """
    engine = channel_session_engine()
    if engine.endswith("signed_cookies"):
        return None
    key = channel_session_key(reply_channel)
    store: SessionBase = import_module(engine).SessionStore(session_key=key)
    store.keys()  # load now: an engine forgets a key that names no stored session...
    store._session_key = key  # ...and this one is ours to create (Channels 1.x did the same)
    return store


def save_channel_session(session: SessionBase) -> None:
    """Persist a channel session under its own key (creating it on first save)."""
    from django.contrib.sessions.backends.base import CreateError, UpdateError

    if isinstance(session, ConnectionSession):
        return
    key = session.session_key
    if key is not None and not session.exists(key):
        try:
            session.save(must_create=True)
            return
        except CreateError:
            pass  # another process created it first: update it below
    try:
        session.save()
    except UpdateError:
        # Deleted meanwhile (the connection's disconnect handler ran): recreate.
        session.save(must_create=True)


class ConnectionSession(SessionBase):
    """A session that lives as long as one connection, in the serving process.

    The fallback for ``message.channel_session`` when the session engine
    cannot store it by key (signed-cookie sessions): consumers of other
    channels do not see it then. ``save()`` is accepted (and does nothing),
    so Channels 1.x code ports unchanged.
    """

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._session_cache: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        return {}

    def exists(self, session_key: str) -> bool:
        return False

    def create(self) -> None:
        self.modified = False

    def save(self, must_create: bool = False) -> None:
        self.modified = False

    def delete(self, session_key: str | None = None) -> None:
        self._session_cache = {}

    def cycle_key(self) -> None:
        """Nothing to rotate: the data never leaves the process."""


# The decorators live in their own module; re-exported for Channels 1.x imports
# (`from channels.sessions import channel_session` -> `from wsbridge_django.sessions import ...`).
from .decorators import (  # noqa: E402
    channel_session,
    channel_session_user,
    channel_session_user_from_http,
    enforce_ordering,
    http_session,
    http_session_user,
)
