"""lp_app wrapped for ``wsbridge serve lp_serve_app:application`` (the shutdown test)."""

from __future__ import annotations

import lp_app

from wsbridge.transport.wsgi import wrap

application = wrap(lp_app.application, router=lp_app.routes, longpoll={"poll_timeout": 20})


def parked(environ, start_response):
    """How many polls the long-poll transport is holding (the test waits for 1)."""
    sessions = application.longpoll_transport.sessions.values()
    count = sum(1 for session in sessions if session.poller is not None)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [str(count).encode()]


application.mount("/_wsbridge/test-parked", parked, exact=True)
