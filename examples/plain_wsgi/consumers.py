"""The chat's consumers: one socket per browser tab, one group per room.

This example registers on its own ``Router`` so that it can live in one
process beside other examples and tests; a site usually decorates with
``wsbridge.router`` instead (the same decorators).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from wsbridge import JsonWebsocketConsumer, Router, WebsocketConsumer

router = Router()

#: Longest chat line accepted, in characters.
MAX_TEXT = 500


@router.websocket("ws/echo/")
class EchoConsumer(WebsocketConsumer):
    """Sends every message back: the smallest consumer there is."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


@router.websocket("ws/chat/<slug:room>/")
class ChatConsumer(JsonWebsocketConsumer):
    """A chat room: what one member says, every member of the room receives.

    Client -> server: ``{"text": "hi"}``. Server -> client:
    ``{"type": "message", "user": ..., "text": ...}``, ``{"type": "joined"|"left",
    "user": ...}`` and ``{"type": "error", "error": ...}`` for bad input.
    """

    def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        query = parse_qs(self.scope["query_string"].decode("latin-1"))
        self.user = (query.get("name") or ["anonymous"])[0][:40] or "anonymous"
        self.channel_layer.group_add(self.group, self.channel_name)
        self.accept()
        self.channel_layer.group_send(
            self.group, {"type": "chat.notice", "event": "joined", "user": self.user}
        )

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            content = self.decode_json(text_data or "")
        except ValueError:
            self.send_json({"type": "error", "error": 'send JSON such as {"text": "hi"}'})
            return
        self.receive_json(content)

    def receive_json(self, content: Any) -> None:
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            self.send_json({"type": "error", "error": "a message needs a non-empty 'text'"})
            return
        if len(text) > MAX_TEXT:
            self.send_json({"type": "error", "error": f"at most {MAX_TEXT} characters"})
            return
        self.channel_layer.group_send(
            self.group, {"type": "chat.message", "user": self.user, "text": text}
        )

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send_json({"type": "message", "user": event["user"], "text": event["text"]})

    def chat_notice(self, event: dict[str, Any]) -> None:
        self.send_json({"type": event["event"], "user": event["user"]})

    def disconnect(self, code: int) -> None:
        self.channel_layer.group_discard(self.group, self.channel_name)
        self.channel_layer.group_send(
            self.group, {"type": "chat.notice", "event": "left", "user": self.user}
        )
