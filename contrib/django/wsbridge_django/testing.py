"""Test helpers for Django sites: a Communicator that knows Django.

Inside Django's ``TestCase`` (or pytest-django's ``db`` fixture) the
consumer sees the test's database, inside the test's transaction, and the
user you log in::

    from django.test import TestCase
    from wsbridge_django.testing import DjangoCommunicator

    class InboxTests(TestCase):
        def test_logged_in_user_gets_their_messages(self):
            user = User.objects.create_user("ada")
            with DjangoCommunicator(path="/ws/inbox/", user=user) as comm:
                accepted, _ = comm.connect()
                assert accepted
                assert comm.receive_json_from()["unread"] == 0

``user=`` logs the user in the way ``Client.force_login`` does: a real
session is created with the site's engine and its cookie is sent with the
handshake, so the consumer goes through the same cookie -> session -> user
path as in production. ``client=`` sends the cookies of a test ``Client``
you logged in yourself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wsbridge.consumers.routing import Router
from wsbridge.testing import Communicator

from .db import SHARED_CONNECTIONS_KEY
from .routing import DjangoConsumer, DjangoRouter, get_router

__all__ = ["DjangoCommunicator", "WebsocketCommunicator", "session_cookie_for"]


def session_cookie_for(user: Any, *, backend: str | None = None) -> str:
    """Log ``user`` in with a fresh session (``Client.force_login``); return the cookie value."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user, backend=backend)
    cookie: str = client.cookies[settings.SESSION_COOKIE_NAME].value
    return cookie


class DjangoCommunicator(Communicator):
    """A :class:`wsbridge.testing.Communicator` going through the Django handling.

    Args:
        application: a consumer class, a Router, or None for the site's router.
        path: the request path (with an optional query string).
        user: log this user in (a real session, its cookie sent).
        client: a ``django.test.Client`` whose cookies are sent instead.
        cookies: more cookies to send, ``{name: value}``.
        origin: the ``Origin`` header (browsers always send one); None sends none.
        headers, subprotocols, channel_layer, scope: as for ``Communicator``.
    """

    def __init__(
        self,
        application: Any = None,
        path: str = "/",
        *,
        user: Any = None,
        client: Any = None,
        cookies: dict[str, str] | None = None,
        origin: str | None = None,
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        subprotocols: Iterable[str] = (),
        channel_layer: Any = None,
        scope: dict[str, Any] | None = None,
    ) -> None:
        all_headers = list(headers)
        jar = _cookies(user, client)
        jar.update(cookies or {})
        if jar:
            all_headers.append(
                (b"cookie", "; ".join(f"{k}={v}" for k, v in jar.items()).encode("latin-1"))
            )
        if origin is not None:
            all_headers.append((b"origin", origin.encode("latin-1")))
        extra = dict(scope or {})
        shared = _connections_in_transaction()
        if shared:
            extra.setdefault(SHARED_CONNECTIONS_KEY, shared)
        super().__init__(
            _djangoify(application),
            path,
            headers=all_headers,
            subprotocols=subprotocols,
            channel_layer=channel_layer,
            scope=extra,
        )


def _djangoify(application: Any) -> Any:
    if application is None:
        return get_router()
    if isinstance(application, DjangoRouter) or isinstance(application, DjangoConsumer):
        return application
    if isinstance(application, Router):
        return DjangoRouter(application)
    return DjangoConsumer(application)


def _cookies(user: Any, client: Any) -> dict[str, str]:
    from django.conf import settings

    if user is not None and client is not None:
        raise ValueError("pass user= or client=, not both")
    if user is not None:
        return {settings.SESSION_COOKIE_NAME: session_cookie_for(user)}
    if client is not None:
        return {name: morsel.value for name, morsel in client.cookies.items()}
    return {}


def _connections_in_transaction() -> dict[str, Any]:
    # A TestCase wraps each test in a transaction on this greenlet's
    # connection; the consumer's greenlet must use that same connection to
    # see the test's rows (and not wait on its locks).
    from .db import initialized_connections

    return {conn.alias: conn for conn in initialized_connections() if conn.in_atomic_block}


#: The Channels name.
WebsocketCommunicator = DjangoCommunicator
