"""Run ``wrap(lp_app.application)`` on wsbridge's pywsgi server for the tests.

    python tests/transport/lp_server.py [--layer memory|redis] [--poll-timeout S] ...

Binds 127.0.0.1 on a free port and prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lp_app  # noqa: E402

from wsbridge.layers import build_layer, set_channel_layer  # noqa: E402
from wsbridge.transport.server import make_server  # noqa: E402
from wsbridge.transport.wsgi import wrap  # noqa: E402


def header_user(scope):
    return dict(scope["headers"]).get(b"x-test-user", b"").decode()


def with_stats(app, layer):
    """Add /lpstats: what the long-poll transport and the layer hold (leak checks)."""

    def stats(environ, start_response):
        if environ.get("PATH_INFO") != "/lpstats":
            return app(environ, start_response)
        transport = app.longpoll_transport
        body = json.dumps(
            {
                "sessions": len(transport.sessions),
                "tombstones": len(transport.process.table.tombstones),
                "attached": layer.stats().get("attached"),
                "polls_held": sum(
                    1
                    for session in transport.sessions.values()
                    if session.poller is not None and not session.poller.ready()
                ),
            }
        ).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    stats.wsbridge_wrapped = True
    return stats


def refusing_upgrades(app):
    def refuse(environ, start_response):
        if "websocket" in environ.get("HTTP_UPGRADE", "").lower():
            start_response("403 Forbidden", [("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)

    refuse.wsbridge_wrapped = True  # make_server must not wrap it again
    return refuse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", default="memory")
    parser.add_argument("--redis-prefix", default="wsbridge-test")
    parser.add_argument("--poll-timeout", type=float, default=5.0)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--max-body", type=int, default=64 * 1024)
    parser.add_argument("--max-buffer", type=int, default=1000)
    parser.add_argument("--batch-wait", type=float, default=None)
    parser.add_argument("--allowed-origin", action="append", default=[])
    parser.add_argument("--secret", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--user-from-header",
        action="store_true",
        help="bind tokens to the X-Test-User header (a stand-in user)",
    )
    parser.add_argument(
        "--refuse-upgrades",
        action="store_true",
        help="answer 403 to every WebSocket upgrade (a proxy that blocks them)",
    )
    args = parser.parse_args()
    if args.layer == "redis":
        layer = build_layer(
            {
                "BACKEND": "redis",
                "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"], "prefix": args.redis_prefix},
            }
        )
    else:
        layer = build_layer({"BACKEND": "memory"})
    set_channel_layer(layer)
    app = wrap(
        lp_app.application,
        router=lp_app.routes,
        layer=layer,
        secret=args.secret,
        allowed_origins=args.allowed_origin or None,
        longpoll={
            "poll_timeout": args.poll_timeout,
            "session_timeout": args.session_timeout,
            "max_body": args.max_body,
            "max_buffer": args.max_buffer,
            **({"batch_wait": args.batch_wait} if args.batch_wait is not None else {}),
            **({"user_key": header_user} if args.user_from_header else {}),
        },
    )
    app = with_stats(app, layer)
    if args.refuse_upgrades:
        app = refusing_upgrades(app)
    server = make_server(app, "127.0.0.1", args.port)
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
