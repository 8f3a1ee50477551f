"""The echo server used by the conformance run (``tests/conformance/run.py``).

``wsbridge serve tests.conformance.echo_app:application`` serves it. The
Autobahn 9.x cases send messages of up to 16 MiB, so the limits are raised
here; the library defaults stay at 1 MiB. They are throughput cases too
(hundreds of MiB on one connection within seconds), far over the default
inbound byte rates (8 MiB/s per connection, wsbridge.admission), so those
are off here; the message rates stay at their defaults.
"""

from __future__ import annotations

from wsbridge import Router, WebsocketConsumer, wrap
from wsbridge.admission import LimitOptions
from wsbridge.transport.websocket import WebSocketOptions

router = Router()


@router.websocket("")
class EchoConsumer(WebsocketConsumer):
    """Sends every message back as it came: text as text, bytes as bytes."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


def plain_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"echo server: connect with a WebSocket client\n"]


OPTIONS = WebSocketOptions(
    max_message_size=64 * 1024 * 1024,
    max_outbound_bytes=256 * 1024 * 1024,
    ping_interval=None,
)

LIMITS = LimitOptions(connection_bytes=None, user_bytes=None, ip_bytes=None)

application = wrap(plain_app, router=router, websocket=OPTIONS, limits=LIMITS)
