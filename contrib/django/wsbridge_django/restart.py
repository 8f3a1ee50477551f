"""Graceful restart under gunicorn: SIGTERM closes every WebSocket with 1012 first.

The Django names of :mod:`wsbridge.transport.shutdown`: one
:func:`~wsbridge.transport.shutdown.shutdown` for every site (Django or not),
``wsbridge serve``, gunicorn and uWSGI alike: on ``kill -HUP <master>`` (reload) or a
rolling deploy gunicorn sends SIGTERM to the old workers; each closes its
WebSockets with **1012 (service restart)** and hands its long-poll sessions
over through the Redis layer, so it exits as soon as the clients are gone
and ``wsbridge.js`` reconnects at once to a new worker.

``get_wsgi_application()`` installs the handler in each worker. With
``--preload`` the app is loaded in the master, whose signal handlers
workers reset: add ``post_worker_init = "wsbridge_django.restart.post_worker_init"``
to the gunicorn config instead (see docs/topics/deployment-django.rst).

``wsbridge serve`` handles its own signals: SIGTERM closes with 1001,
SIGHUP with 1012.
"""

from __future__ import annotations

from wsbridge.protocol.closecodes import CloseCode
from wsbridge.transport.shutdown import install_restart_handlers, post_worker_init, shutdown

#: The close code sent to WebSockets on a graceful restart (Service Restart).
SERVICE_RESTART = CloseCode.SERVICE_RESTART


def close_for_restart(reason: str = "service restart") -> int:
    """Close every WebSocket with 1012 and hand long-poll sessions over; returns how many.

    :func:`wsbridge.transport.shutdown.shutdown` with 1012 (Service Restart).
    """
    return shutdown(SERVICE_RESTART, reason)


__all__ = ["install_restart_handlers", "close_for_restart", "post_worker_init", "SERVICE_RESTART"]
