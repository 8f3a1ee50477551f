"""The wsbridge target: the same chat (group per room) and echo consumers as the peers.

``BENCH_LAYER=memory`` (default) keeps the in-process layer: publishers then
POST to ``/bench/publish``, a plain WSGI view of the site that calls
``group_send`` inside the server process. ``BENCH_LAYER=redis`` uses the
Redis layer at ``BENCH_REDIS_URL`` (run under ``gunicorn -k gevent``);
publishers then call the layer from their own process.

    wsbridge serve bench.servers.wsbridge_app:application   (from bench/servers)
    gunicorn -k gevent -w 2 wsbridge_app:application
"""

from __future__ import annotations

import json
import os
from typing import Any

from wsbridge import WebsocketConsumer, get_channel_layer, router, wrap
from wsbridge.layers import configure

GROUP_PREFIX = "chat."


def configure_layer() -> None:
    if os.environ.get("BENCH_LAYER", "memory") == "redis":
        url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        configure({"default": {"BACKEND": "redis", "CONFIG": {"hosts": [url]}}})


class RoomConsumer(WebsocketConsumer):
    """The Channels tutorial's consumer, without async_to_sync (less its handler)."""

    def connect(self) -> None:
        self.group = GROUP_PREFIX + self.scope["url_route"]["kwargs"]["room"]
        self.channel_layer.group_add(self.group, self.channel_name)
        self.accept()

    def disconnect(self, code: int) -> None:
        self.channel_layer.group_discard(self.group, self.channel_name)


class ChatConsumer(RoomConsumer):
    """The tutorial's handler: forward the group message's text."""

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["text"])


class FastlaneChatConsumer(RoomConsumer):
    """The same, declared instead of written (``BENCH_FASTLANE=1``): no handler call."""

    fastlane = {"chat.message": "text"}


router.websocket("ws/chat/<str:room>/")(
    FastlaneChatConsumer if os.environ.get("BENCH_FASTLANE") == "1" else ChatConsumer
)


@router.websocket("ws/echo/")
class EchoConsumer(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=text_data, bytes_data=bytes_data)


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The 'existing WSGI site': one view that publishes to a group (memory layer)."""
    if environ.get("PATH_INFO") == "/bench/publish" and environ.get("REQUEST_METHOD") == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        sent = get_channel_layer().group_send(
            GROUP_PREFIX + body["group"],
            {"type": "chat.message", "text": json.dumps(body["payload"])},
        )
        out = json.dumps({"members": sent}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
        )
        return [out]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


def tune_gc() -> None:
    """Experiments only: ``BENCH_GC=off``, ``freeze`` (gc.freeze() after import) or
    ``a,b,c`` (gc.set_threshold)."""
    import gc

    setting = os.environ.get("BENCH_GC")
    if setting == "off":
        gc.disable()
    elif setting == "freeze":
        gc.freeze()
    elif setting:
        gc.set_threshold(*(int(x) for x in setting.split(",")))


tune_gc()
configure_layer()
# BENCH_METRICS=1: Prometheus metrics on (targets wsbridge-metrics, wsbridge-redis1-metrics).
METRICS_PATH = "/_wsbridge/metrics" if os.environ.get("BENCH_METRICS") else None
application = wrap(site, metrics_path=METRICS_PATH)
