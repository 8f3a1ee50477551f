"""Former home of the uWSGI adapter: :mod:`wsbridge.transport.servers.uwsgi` (same names)."""

from __future__ import annotations

from .servers.uwsgi import (
    FORK_HOOKS_MISSING,
    SERVICE_RESTART,
    close_for_reload,
    install_reload_handler,
)
from .servers.uwsgi import handover as uwsgi_handover

__all__ = [
    "uwsgi_handover",
    "install_reload_handler",
    "close_for_reload",
    "SERVICE_RESTART",
    "FORK_HOOKS_MISSING",
]
