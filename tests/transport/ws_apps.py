"""WSGI apps for the WebSocket transport tests (served by ``wsbridge serve`` subprocesses).

``application``: library defaults (1 MiB messages, compression on, pings
every 20 s). ``tight``: the same routes with short keepalive timers, a small
outbound queue and a short handshake timeout, so limits trip within a
second. ``/status/<key>`` (plain HTTP) reports the close code a consumer saw,
which is how a test learns what happened to a client that stopped reading.
"""

from __future__ import annotations

import time

import gevent

from wsbridge import Router, WebsocketConsumer, wrap
from wsbridge.exceptions import DenyConnection
from wsbridge.transport.websocket import WebSocketOptions

router = Router()

#: key (from the query string) -> close code the consumer got in disconnect().
DISCONNECTS: dict[str, int] = {}


class _Recording(WebsocketConsumer):
    def disconnect(self, code: int) -> None:
        key = self.scope["query_string"].decode()
        if key:
            DISCONNECTS[key] = code


@router.websocket("echo/")
class Echo(_Recording):
    """Echo; chooses the first subprotocol offered; 'close:<code>' closes with that code."""

    def connect(self) -> None:
        offered = self.scope["subprotocols"]
        self.accept(subprotocol=offered[0] if offered else None)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None and text_data.startswith("close:"):
            self.close(int(text_data[6:]))
        elif text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


@router.websocket("flood/")
class Flood(_Recording):
    """On 'go <n> <size>', streams n binary messages of size bytes (a live feed)."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        _, count, size = (text_data or "go 0 0").split()
        payload = b"x" * int(size)
        for _ in range(int(count)):
            self.send(bytes_data=payload)
            gevent.sleep(0.001)


@router.websocket("accept-close/")
class AcceptThenClose(_Recording):
    def connect(self) -> None:
        self.accept()
        self.close(4003)


@router.websocket("refuse/")
class Refuse(WebsocketConsumer):
    def connect(self) -> None:
        raise DenyConnection()


@router.websocket("crash/")
class Crash(WebsocketConsumer):
    def connect(self) -> None:
        raise RuntimeError("connect() crashed on purpose (test)")


@router.websocket("slow/")
class SlowAccept(WebsocketConsumer):
    def connect(self) -> None:
        time.sleep(3)  # gevent-patched: blocks only this connection
        self.accept()


@router.websocket("headers/")
class Headers(WebsocketConsumer):
    """Accepts with an extra header and reports what the scope looked like."""

    def connect(self) -> None:
        self.accept(headers=[(b"x-wsbridge-test", b"yes")])

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        scope = self.scope
        self.send(
            text_data=repr(
                (
                    scope["path"],
                    scope["query_string"],
                    scope["url_route"],
                    scope["cookies"],
                    scope["scheme"],
                    scope["subprotocols"],
                )
            )
        )


@router.websocket("room/<str:name>/")
class Room(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=self.scope["url_route"]["kwargs"]["name"])


def site(environ, start_response):
    """The wrapped 'existing site'; also answers /status/<key>."""
    path = environ["PATH_INFO"]
    if path.startswith("/status/"):
        code = DISCONNECTS.get(path[len("/status/") :])
        body = str(code).encode()
    else:
        body = f"site {environ['REQUEST_METHOD']} {path}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = wrap(site, router=router)

tight = wrap(
    site,
    router=router,
    websocket=WebSocketOptions(
        max_message_size=64 * 1024,
        ping_interval=0.3,
        ping_timeout=0.5,
        close_timeout=1.0,
        handshake_timeout=1.0,
        compression=False,
        max_outbound_bytes=256 * 1024,
    ),
)

permissive = wrap(
    site, router=router, allowed_origins=["https://*.example.com", "http://localhost:*"]
)
