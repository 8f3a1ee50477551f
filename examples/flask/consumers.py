"""The news consumer: every socket joins one group, and shows what is published to it.

Registered on its own ``Router`` so that the example can share a process with
other examples and tests; a site usually decorates with ``wsbridge.router``.
"""

from __future__ import annotations

from typing import Any

from wsbridge import JsonWebsocketConsumer, Router

router = Router()

#: The group every subscriber joins and every publish goes to.
NEWS_GROUP = "news"


@router.websocket("ws/news/")
class NewsConsumer(JsonWebsocketConsumer):
    """Joins ``news`` on connect (``groups``), leaves it on disconnect; read-only."""

    groups = [NEWS_GROUP]

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Subscribers do not publish over the socket: say so, keep the socket."""
        self.send_json({"error": "publish with POST /news"})

    def news_item(self, event: dict[str, Any]) -> None:
        """``news.item`` from a view: pass the text on to the browser."""
        self.send_json({"text": event["text"]})
