"""A site with HTTP consumers for running under ``gunicorn -k gevent`` in the tests.

gunicorn -k gevent --chdir tests/transport http_app:application
"""

from __future__ import annotations

import json
from typing import Any

from wsbridge import HttpConsumer, Router, SseConsumer, get_channel_layer
from wsbridge.transport.wsgi import wrap

ROUTES = Router()
ENDED: list[str] = []


@ROUTES.http("held/")
class Held(HttpConsumer):
    groups = ["news"]

    def handle(self, body: bytes) -> None:
        pass

    def news_item(self, event: dict[str, Any]) -> None:
        self.send_response(200, event["text"])

    def disconnect(self) -> None:
        ENDED.append("held")


@ROUTES.http("sse/")
class Stream(SseConsumer):
    groups = ["news"]

    def news_item(self, event: dict[str, Any]) -> None:
        self.send_event(event["text"], id=event["id"])

    def disconnect(self) -> None:
        ENDED.append("sse")


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/send?text`` sends a group event; anything else reports ENDED and the members."""
    layer = get_channel_layer()
    if environ["PATH_INFO"] == "/send":
        layer.group_send("news", {"type": "news.item", "text": environ["QUERY_STRING"], "id": 1})
    body = json.dumps({"ended": ENDED, "attached": layer.stats()["attached"]}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


application = wrap(site, router=ROUTES, http={"hold_timeout": 5})
