"""Slow-client policies through a real server: ticker (coalesce), feed (drop_oldest), plain.

``hfeed.*`` is drop_oldest with a history long enough for every message sent,
``sfeed.*`` drop_oldest with one too short to recover from.

``/publish?group=G&n=N&size=S`` sends N ticks (4 symbols, S bytes of padding) to
group G, yielding every 10 so the mailbox never fills; answers when all are sent.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import gevent

from wsbridge import Router, WebsocketConsumer, get_channel_layer, wrap
from wsbridge.layers import configure
from wsbridge.policies import GroupPolicy
from wsbridge.transport.websocket import WebSocketOptions

router = Router()


@router.websocket("ws/ticks/<str:group>/")
class Ticks(WebsocketConsumer):
    def connect(self) -> None:
        self.groups = [self.scope["url_route"]["kwargs"]["group"]]
        self.channel_layer.group_add(self.groups[0], self.channel_name)
        self.accept()

    def disconnect(self, code: int) -> None:
        self.channel_layer.group_discard(self.groups[0], self.channel_name)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data="echo:" + str(text_data))

    def tick(self, event: dict[str, Any]) -> None:
        self.send(
            text_data=json.dumps(
                {"symbol": event["symbol"], "seq": event["seq"], "pad": event["pad"]}
            )
        )


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    layer = get_channel_layer()
    pad = "x" * int(query["size"])
    skipped = 0
    for seq in range(int(query["n"])):
        skipped += (
            layer.group_send(
                query["group"], {"type": "tick", "symbol": f"s{seq % 4}", "seq": seq, "pad": pad}
            )
            or 0
        )
        if seq % 10 == 9:
            gevent.sleep(0.001)
    body = json.dumps({"skipped": skipped}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


configure(
    {
        "default": {
            "BACKEND": "memory",
            "CONFIG": {"groups": {"hfeed.*": {"history": 1000}, "sfeed.*": {"history": 20}}},
        }
    }
)

application = wrap(
    site,
    router=router,
    websocket=WebSocketOptions(
        max_outbound_bytes=256 * 1024, ping_interval=None, compression=False
    ),
    group_policies={
        "ticker.*": GroupPolicy("coalesce", key="symbol"),
        "feed.*": GroupPolicy("drop_oldest", max_parked=32),
        "hfeed.*": GroupPolicy("drop_oldest", max_parked=32),
        "sfeed.*": GroupPolicy("drop_oldest", max_parked=32),
    },
)
