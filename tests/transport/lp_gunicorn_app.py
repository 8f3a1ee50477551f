"""The long-poll test app on the Redis layer (for ``gunicorn -k gevent -w 2``, ``wsbridge serve``).

Settings come from the environment: LP_REDIS_PREFIX, WSBRIDGE_SECRET (unset:
a random secret per process), LP_POLL_TIMEOUT (1.5 s), LP_SESSION_TIMEOUT (5 s),
LP_HISTORY (a group pattern given a history of 500, e.g. ``chat.*``), LP_LEASE (the
layer's process lease, 30 s), LP_CHECKPOINTS (``0``: sessions not checkpointed).
"""

from __future__ import annotations

import os

import lp_app

from wsbridge.layers import build_layer, set_channel_layer
from wsbridge.transport.wsgi import wrap

config = {"hosts": ["redis://127.0.0.1:6379/0"], "prefix": os.environ["LP_REDIS_PREFIX"]}
if os.environ.get("LP_LEASE"):
    config["lease"] = float(os.environ["LP_LEASE"])
if os.environ.get("LP_HISTORY"):
    config["groups"] = {os.environ["LP_HISTORY"]: {"history": 500}}
layer = build_layer({"BACKEND": "redis", "CONFIG": config})
set_channel_layer(layer)
application = wrap(
    lp_app.application,
    router=lp_app.routes,
    layer=layer,
    longpoll={
        "poll_timeout": float(os.environ.get("LP_POLL_TIMEOUT", "1.5")),
        "session_timeout": float(os.environ.get("LP_SESSION_TIMEOUT", "5")),
        "checkpoints": os.environ.get("LP_CHECKPOINTS") != "0",
    },
)


def parked(environ, start_response):
    """How many polls this process is holding (tests wait for one before a restart)."""
    sessions = application.longpoll_transport.sessions.values()
    count = sum(1 for session in sessions if session.poller is not None)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [str(count).encode()]


application.mount("/_wsbridge/test-parked", parked, exact=True)


def sessions(environ, start_response):
    """How many sessions this process holds."""
    start_response("200 OK", [("Content-Type", "application/json")])
    return [str(len(application.longpoll_transport.sessions)).encode()]


application.mount("/_wsbridge/test-sessions", sessions, exact=True)
