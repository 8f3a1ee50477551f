"""python-socketio in gevent mode with its Redis manager (the peer users would pick).

Set up as python-socketio's documentation shows for gevent: ``socketio.Server``
with ``async_mode="gevent"`` and ``client_manager=socketio.RedisManager(url)``,
served by gevent's pywsgi with gevent-websocket's handler. A client that
connects with ``?room=<name>`` joins that room (the fan-out group); the
``echo`` event is answered through its ack.

    python socketio_server.py --port P --redis redis://127.0.0.1:R/0
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import socketio  # noqa: E402
from gevent import pywsgi  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402


def build(redis_url: str) -> socketio.WSGIApp:
    sio = socketio.Server(
        async_mode="gevent",
        client_manager=socketio.RedisManager(redis_url),
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    def connect(sid, environ, auth=None):
        room = parse_qs(environ.get("QUERY_STRING", "")).get("room", [None])[0]
        if room:
            sio.enter_room(sid, room)

    @sio.on("echo")
    def echo(sid, data):
        # The reply is the event's ack: it goes straight to this socket. (An
        # emit(..., to=sid) would go through Redis too, as every emit does with
        # a client manager: about 4x slower here, see docs/topics/performance.rst.)
        return data

    return socketio.WSGIApp(sio)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    server = pywsgi.WSGIServer(
        ("127.0.0.1", args.port),
        build(args.redis),
        handler_class=WebSocketHandler,
        log=None,
        backlog=4096,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
