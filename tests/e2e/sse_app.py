"""The site served for test_sse_browser.py: a page with an EventSource, and SSE consumers.

Run by ``wsbridge serve tests.e2e.sse_app:application`` (from the repository root).

    GET  /               the page (plain WSGI: the site's own app)
    GET  /events/<feed>/ SseConsumer; ``?stop=1`` answers 204 (the browser stops)
    POST /publish/<feed>/ JSON {"data", "id", "event"} -> group "feed.<feed>"
    POST /drop/<feed>/   ends every stream of the feed (browsers reconnect)
    GET  /seen/          the Last-Event-ID values reconnecting browsers sent
"""

from __future__ import annotations

import json
from typing import Any

from wsbridge.consumers.http import SseConsumer
from wsbridge.consumers.routing import Router
from wsbridge.transport.wsgi import wrap

ROUTES = Router()
SEEN_LAST_IDS: list[str] = []

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>sse</title></head><body>
<script>
window.events = [];
window.opens = 0;
window.errors = 0;
window.connect = function (url) {
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  const keep = (e) => window.events.push({type: e.type, data: e.data, id: e.lastEventId});
  source.onmessage = keep;
  source.addEventListener("alert", keep);
  source.addEventListener("resume", keep);
  return source;
};
</script>
</body></html>
"""


@ROUTES.http("events/<str:feed>/")
class Feed(SseConsumer):
    retry = 300  # ms: reconnect fast in the test
    keepalive_interval = 1.0

    def connect(self) -> None:
        if self.query.get("stop"):
            self.send_response(204)  # tells EventSource not to reconnect
            return
        self.group = f"feed.{self.scope['url_route']['kwargs']['feed']}"
        self.channel_layer.group_add(self.group, self.channel_name)
        if self.last_event_id is not None:
            SEEN_LAST_IDS.append(self.last_event_id)
            self.send_event(f"after {self.last_event_id}", event="resume")

    def feed_item(self, event: dict[str, Any]) -> None:
        self.send_event(event["data"], id=event.get("id"), event=event.get("event"))

    def feed_drop(self, event: dict[str, Any]) -> None:
        self.close()

    def disconnect(self) -> None:
        if hasattr(self, "group"):
            self.channel_layer.group_discard(self.group, self.channel_name)


@ROUTES.http("publish/<str:feed>/")
def publish(message: Any) -> str:
    item = json.loads(message["body"])
    feed = message.scope["url_route"]["kwargs"]["feed"]
    message.channel_layer.group_send(f"feed.{feed}", {"type": "feed.item", **item})
    return "ok"


@ROUTES.http("drop/<str:feed>/")
def drop(message: Any) -> str:
    feed = message.scope["url_route"]["kwargs"]["feed"]
    message.channel_layer.group_send(f"feed.{feed}", {"type": "feed.drop"})
    return "dropped"


@ROUTES.http("seen/")
def seen(message: Any) -> dict[str, Any]:
    return {"status": 200, "content": json.dumps(SEEN_LAST_IDS).encode()}


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response(
        "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))]
    )
    return [PAGE]


application = wrap(site, router=ROUTES, http={"hold_timeout": 5})
