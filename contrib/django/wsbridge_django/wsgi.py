"""``get_wsgi_application()``: Django's WSGI handler, wrapped by wsbridge.

The one-line change to an existing site's ``wsgi.py``::

    # from django.core.wsgi import get_wsgi_application
    from wsbridge_django.wsgi import get_wsgi_application
    application = get_wsgi_application()

A ``wsgi.py`` that already wraps Django (WhiteNoise, Sentry...) wraps the
outermost app instead::

    from wsbridge_django.wsgi import wrap_application
    application = wrap_application(WhiteNoise(django_application))

Every plain HTTP request still goes to the site's app, untouched.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "get_wsgi_application",
    "wrap_application",
    "origin_check",
    "websocket_options",
    "longpoll_options",
    "longpoll_secret",
]


def get_wsgi_application(*, run_checks: bool = True) -> Any:
    """Set Django up and return its WSGI handler wrapped by :func:`wrap_application`.

    Args:
        run_checks: run wsbridge's system checks as a serving process first
            (``ImproperlyConfigured`` with every error's message and hint).
    """
    from django.core.wsgi import get_wsgi_application as django_wsgi_application

    handler = django_wsgi_application()
    return wrap_application(handler, run_checks=run_checks)


def wrap_application(app: Any, *, run_checks: bool = True) -> Any:
    """Wrap any WSGI app of this Django site with the settings of ``WSBRIDGE``.

    The router is the site's (:func:`wsbridge_django.routing.get_router`),
    the Origin check follows ``ALLOWED_HOSTS`` (or
    ``WSBRIDGE["ALLOWED_ORIGINS"]``), the limits come from the settings and
    ``WSBRIDGE["OPTIONS"]`` is passed to :func:`wsbridge.wrap` last.
    """
    import wsbridge

    from .checks import run_startup_checks
    from .conf import wsbridge_settings
    from .restart import install_restart_handlers
    from .routing import get_router

    if run_checks:
        run_startup_checks()
    options: dict[str, Any] = {
        "router": get_router(),
        "origin_check": origin_check,
        "websocket": websocket_options(),
        "secret": longpoll_secret(),
        "longpoll": longpoll_options(),
    }
    from django.apps import apps

    if apps.is_installed("django.contrib.auth"):
        from .identity import identity_options

        options["identity"] = identity_options()
    if wsbridge_settings.LIMITS:
        options["limits"] = wsbridge_settings.LIMITS
    if wsbridge_settings.GROUP_POLICIES:
        options["group_policies"] = wsbridge_settings.GROUP_POLICIES
    options.update(wsbridge_settings.OPTIONS)
    wrapped = wsbridge.wrap(app, **options)
    install_restart_handlers(wrapped)
    return wrapped


def origin_check(environ: dict[str, Any]) -> bool:
    """The wrapped app's Origin check: ``ALLOWED_HOSTS`` rules (see :mod:`.origins`)."""
    from .conf import allowed_origins
    from .origins import origin_allowed

    return origin_allowed(environ.get("HTTP_ORIGIN"), allowed_origins())


def longpoll_secret() -> str:
    """The key signing long-poll tokens: derived from ``SECRET_KEY``, the same in every process."""
    from django.utils.crypto import salted_hmac

    digest = salted_hmac("wsbridge_django.longpoll", "session-token", algorithm="sha256")
    return str(digest.hexdigest())


def longpoll_options() -> dict[str, Any]:
    """``WSBRIDGE["LONGPOLL"]`` plus a ``user_key`` that reads the user from the session cookie.

    Long-poll tokens are bound to the user who opened the session; every
    later poll and send is checked against the user its own cookie names.
    """
    from .conf import wsbridge_settings

    options = dict(wsbridge_settings.LONGPOLL or {})
    options.setdefault("user_key", django_user_key)
    return options


def django_user_key(scope: dict[str, Any]) -> str:
    """The pk of the user the request's session cookie names ("" when anonymous).

    It runs in the long-poll request's greenlet, which Django's own request
    cycle never sees: the database connections the session and user lookups
    opened are released here, or every poll would leave one open.
    """
    from .db import release_connections
    from .routing import prepare_scope

    try:
        prepare_scope(scope)
        user = scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return ""
        return str(user.pk)
    finally:
        release_connections()


def websocket_options() -> Any:
    """``WebSocketOptions`` from ``WSBRIDGE`` (unset limits keep wsbridge's defaults)."""
    from wsbridge.transport.websocket import WebSocketOptions

    from .conf import wsbridge_settings

    fields = {
        "max_message_size": wsbridge_settings.MAX_MESSAGE_SIZE,
        "handshake_timeout": wsbridge_settings.HANDSHAKE_TIMEOUT,
        "max_outbound_bytes": wsbridge_settings.MAX_OUTBOUND_BYTES,
        "ping_interval": wsbridge_settings.PING_INTERVAL,
    }
    kwargs = {key: value for key, value in fields.items() if value is not None}
    kwargs.update(wsbridge_settings.WEBSOCKET or {})
    return WebSocketOptions(**kwargs)
