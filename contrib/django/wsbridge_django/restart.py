"""Graceful restart: placeholder, filled in once the transport's connection registry exists."""

from __future__ import annotations


def install_restart_handlers() -> None:
    """Close sockets with 1012 on SIGTERM/SIGHUP (see docs/topics/deployment-django.rst)."""
