"""Apps for the one-layer-per-process tests: a room consumer and a ``/publish/`` view.

* :data:`plain`: a plain WSGI site wrapped with ``wrap(site, layer=...)``, the
  layer named by ``APP_LAYER`` (as ``examples/plain_wsgi`` does with its layer);
* ``tests.e2e.one_layer_flask:application``: the same on Flask, its layer
  named only by ``WSBRIDGE_LAYER``.

The view sends with ``get_channel_layer().group_send`` (what the tutorial
tells users to do); it must reach the sockets of every worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import wsbridge
from wsbridge import JsonWebsocketConsumer, Router, get_channel_layer

router = Router()
GROUP = "onelayer.room"


@router.websocket("ws/room/")
class Room(JsonWebsocketConsumer):
    """Joins the room and says which process serves it; ``{"hog": s}`` keeps it busy."""

    def connect(self) -> None:
        self.channel_layer.group_add(GROUP, self.channel_name)
        self.accept()
        self.send_json({"pid": os.getpid()})

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        # Busy without yielding: the next connection can only go to another worker.
        # "hogging" goes out first (a direct write), so the test knows it has begun.
        self.send_json({"hogging": content.get("hog")})
        end = time.monotonic() + float(content.get("hog", 0))
        while time.monotonic() < end:
            pass
        self.send_json({"hogged": content.get("hog")})

    def room_message(self, event: dict[str, Any]) -> None:
        self.send_json({"text": event["text"], "via": event["pid"]})


def publish(text: str) -> str:
    """What a view does: send to the group through the process's layer."""
    get_channel_layer().group_send(
        GROUP, {"type": "room.message", "text": text, "pid": os.getpid()}
    )
    return f"published by {os.getpid()} on {type(get_channel_layer()).__name__}"


def site(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/publish/":
        text = parse_qs(environ.get("QUERY_STRING", "")).get("text", [""])[0]
        body = publish(text).encode()
    else:
        body = b"ordinary page ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _plain() -> Any:
    from wsbridge.worker import layer_from_option

    return wsbridge.wrap(site, router=router, layer=layer_from_option(os.environ.get("APP_LAYER")))


def __getattr__(name: str) -> Any:
    # Built on first access (in each gunicorn worker), not when tests import the module.
    if name == "plain":
        app = globals()["plain"] = _plain()
        return app
    raise AttributeError(name)
