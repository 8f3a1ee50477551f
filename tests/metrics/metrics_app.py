"""A wrapped app with metrics on, for the metrics tests (``wsbridge serve`` and gunicorn).

``/echo/`` says its worker's pid first, then echoes; ``/boom/`` raises on every
message; ``/refuse/`` refuses the handshake. Metrics at ``/_wsbridge/metrics``
need ``Authorization: Bearer <WSBRIDGE_TEST_METRICS_TOKEN>`` when that is set.
"""

from __future__ import annotations

import os

from wsbridge import Router, WebsocketConsumer, wrap

router = Router()


@router.websocket("echo/")
class Echo(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        self.send(text_data=f"pid {os.getpid()}")

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=text_data, bytes_data=bytes_data)


@router.websocket("room/")
class Room(WebsocketConsumer):
    groups = ["lobby"]


@router.websocket("boom/")
class Boom(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("boom on purpose")


@router.websocket("refuse/")
class Refuse(WebsocketConsumer):
    def connect(self) -> None:
        self.close()


def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"site {os.getpid()}".encode()]


application = wrap(
    site,
    router=router,
    metrics_path="/_wsbridge/metrics",
    metrics_token=os.environ.get("WSBRIDGE_TEST_METRICS_TOKEN") or None,
)
