"""The plain WSGI site the attack suite runs against (``wsbridge serve`` in a subprocess).

Routes: ``/ws/echo/`` (WebSocket and long-poll echo), ``/ws/sink/`` (reads
and drops every message), ``/http/echo/`` (an HTTP consumer answering its
body back) and every other path to a tiny plain WSGI app. Limits are
tightened so that the timeouts trip within the suite's time budget; the
command line adds ``--header-timeout`` and ``--keepalive-timeout``.
"""

from __future__ import annotations

import json
from typing import Any

from wsbridge import HttpConsumer, Router, WebsocketConsumer
from wsbridge.transport.limits import refusal_counts
from wsbridge.transport.websocket import WebSocketOptions
from wsbridge.transport.wsgi import wrap

routes = Router()


@routes.websocket("ws/echo/")
class Echo(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


@routes.websocket("ws/sink/")
class Sink(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass


@routes.websocket("ws/burst/")
class Burst(WebsocketConsumer):
    """On 'burst <n> <size>', queues n binary messages at once (a client must keep up)."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        _, count, size = (text_data or "burst 0 0").split()
        payload = b"b" * int(size)
        for _ in range(int(count)):
            self.send(bytes_data=payload)


@routes.http("http/echo/")
class HttpEcho(HttpConsumer):
    max_body_size = 64 * 1024

    def handle(self, body: bytes) -> None:
        self.send_response(200, body, headers=[(b"Content-Type", b"application/octet-stream")])


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("PATH_INFO") == "/_counts":  # the refusal counters, for the tests
        body = json.dumps(refusal_counts()).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
    body = b"plain page ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = wrap(
    site,
    router=routes,
    websocket=WebSocketOptions(
        max_message_size=256 * 1024,
        handshake_timeout=2.0,
        close_timeout=1.0,
        max_outbound_bytes=512 * 1024,
    ),
    secret="adversarial-suite-secret-key-0123456789",
    longpoll={"max_body": 64 * 1024, "body_timeout": 1.0, "poll_timeout": 2.0},
    http={"body_timeout": 1.0, "hold_timeout": 2.0},
)
