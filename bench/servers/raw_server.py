"""The raw floor: a minimal gevent WebSocket server, no framework.

``/ws/chat/<room>/`` sockets join one broadcast set fed by a single Redis
subscription (channel ``bench.fanout``); ``/ws/echo/`` echoes each frame.
gevent-websocket does the handshake and framing. Nothing else: no rooms
bookkeeping, no per-connection queue, no consumer dispatch. This is what
any framework's fan-out is measured against.

    python raw_server.py --port P --redis redis://127.0.0.1:R/0
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
from gevent import pywsgi  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402

CHANNEL = "bench.fanout"
members: set = set()


def broadcast_loop(url: str) -> None:
    pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    for message in pubsub.listen():
        data = message["data"].decode()
        for ws in list(members):
            try:
                ws.send(data)
            except Exception:  # a gone client: forget it
                members.discard(ws)


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    path = environ.get("PATH_INFO", "")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"raw floor\n"]
    if path.startswith("/ws/chat/"):
        members.add(ws)
        try:
            while ws.receive() is not None:
                pass
        finally:
            members.discard(ws)
    else:
        while True:
            msg = ws.receive()
            if msg is None:
                break
            ws.send(msg)
    return []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    gevent.spawn(broadcast_loop, args.redis)
    server = pywsgi.WSGIServer(
        ("127.0.0.1", args.port), app, handler_class=WebSocketHandler, log=None, backlog=4096
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
