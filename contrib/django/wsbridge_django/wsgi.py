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

__all__ = ["get_wsgi_application", "wrap_application", "origin_check", "websocket_options"]


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
    }
    options.update(wsbridge_settings.OPTIONS)
    wrapped = wsbridge.wrap(app, **options)
    install_restart_handlers()
    return wrapped


def origin_check(environ: dict[str, Any]) -> bool:
    """The wrapped app's Origin check: ``ALLOWED_HOSTS`` rules (see :mod:`.origins`)."""
    from .conf import allowed_origins
    from .origins import origin_allowed

    return origin_allowed(environ.get("HTTP_ORIGIN"), allowed_origins())


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
