"""The ``WSBRIDGE`` setting, read lazily with defaults.

Nothing here touches ``django.conf.settings`` at import time: every value
is looked up when asked for, so ``override_settings`` in tests works and
importing wsbridge_django never configures Django by accident::

    WSBRIDGE = {
        # Channels' CHANNEL_LAYERS shape; falls back to CHANNEL_LAYERS, then memory.
        "LAYERS": {"default": {"BACKEND": "redis", "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}},
        "CONSUMERS": ["myproject.realtime"],      # extra modules to import
        "AUTODISCOVER": True,                     # import <app>/consumers.py of each app
        "ROUTING": None,                          # or "myproject.routing" (routes list / router)
        "ALLOWED_ORIGINS": None,                  # None: derived from ALLOWED_HOSTS
        "MAX_MESSAGE_SIZE": None,                 # limits: None keeps wsbridge's default
        "HANDSHAKE_TIMEOUT": None,
        "MAX_OUTBOUND_BYTES": None,
        "PING_INTERVAL": None,
        "WEBSOCKET": {},                          # any other WebSocketOptions field
        "LONGPOLL": {},                           # LongPollOptions fields (poll_timeout...)
        "PROCESSES": None,                        # how many processes serve (checks)
        "CLOSE_OLD_CONNECTIONS": True,            # around every consumer call
        "IDENTITY": {},                           # re-check interval, tokens (identity.rst)
        "GROUP_POLICIES": None,                   # {"ticker.*": "drop_oldest"} (policies)
        "LIMITS": None,                           # per IP / per user (wsbridge.admission)
        "OPTIONS": {},                            # passed to wsbridge.wrap() as they are
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULTS", "wsbridge_settings", "WsbridgeSettings", "layer_settings", "allowed_origins"]

#: Every ``settings.WSBRIDGE`` key with its default value.
DEFAULTS: dict[str, Any] = {
    "LAYERS": None,
    "CONSUMERS": [],
    "AUTODISCOVER": True,
    "ROUTING": None,
    "ALLOWED_ORIGINS": None,
    "MAX_MESSAGE_SIZE": None,
    "HANDSHAKE_TIMEOUT": None,
    "MAX_OUTBOUND_BYTES": None,
    "PING_INTERVAL": None,
    "WEBSOCKET": {},
    "LONGPOLL": {},
    "PROCESSES": None,
    "CLOSE_OLD_CONNECTIONS": True,
    "REQUIRE_GEVENT": True,
    "IDENTITY": {},
    "GROUP_POLICIES": None,
    "LIMITS": None,
    "OPTIONS": {},
}


class WsbridgeSettings:
    """Attribute access to ``settings.WSBRIDGE[...]`` with ``DEFAULTS``.

    ``wsbridge_settings.ALLOWED_ORIGINS`` reads Django's settings at the
    moment it is asked, never before.
    """

    def _user_settings(self) -> Mapping[str, Any]:
        from django.conf import settings

        value = getattr(settings, "WSBRIDGE", None) or {}
        if not isinstance(value, Mapping):
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"WSBRIDGE must be a dict, not {type(value).__name__}")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(
                f"unknown WSBRIDGE setting {name!r} (known: {', '.join(DEFAULTS)})"
            )
        return self._user_settings().get(name, DEFAULTS[name])

    def unknown_keys(self) -> list[str]:
        """Keys in ``settings.WSBRIDGE`` that wsbridge does not know (a typo, usually)."""
        return sorted(set(self._user_settings()) - set(DEFAULTS))


#: The process's settings, read when asked (``wsbridge_settings.LAYERS``...).
wsbridge_settings = WsbridgeSettings()


def layer_settings() -> dict[str, Any] | None:
    """The layers to configure: ``WSBRIDGE["LAYERS"]``, else ``CHANNEL_LAYERS``, else None.

    None means nothing was configured: the in-memory layer is the default.
    """
    from django.conf import settings

    layers = wsbridge_settings.LAYERS
    if layers is None:
        layers = getattr(settings, "CHANNEL_LAYERS", None)
    return dict(layers) if layers else None


def allowed_origins() -> list[str]:
    """The host patterns an ``Origin`` header may name.

    ``WSBRIDGE["ALLOWED_ORIGINS"]`` when set (host patterns as in
    ``ALLOWED_HOSTS``, or full origins such as ``"https://app.example.com"``,
    or ``"*"``); otherwise ``ALLOWED_HOSTS``, plus the loopback names while
    ``DEBUG`` is on and ``ALLOWED_HOSTS`` is empty (Django's own rule).
    """
    from django.conf import settings

    configured = wsbridge_settings.ALLOWED_ORIGINS
    if configured is not None:
        return list(configured)
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def expected_processes() -> int:
    """How many processes will serve this site, as far as can be told.

    ``WSBRIDGE["PROCESSES"]`` when set; else ``WEB_CONCURRENCY``; else
    gunicorn's ``-w``/``--workers`` from ``GUNICORN_CMD_ARGS`` or from the
    command line of a gunicorn process; else 1
    (:func:`wsbridge.process.expected_processes`).
    """
    from wsbridge.process import expected_processes as processes

    return processes(wsbridge_settings.PROCESSES)


def _gunicorn_workers(cmdline: str) -> int | None:
    from wsbridge.process import gunicorn_workers

    return gunicorn_workers(cmdline)
