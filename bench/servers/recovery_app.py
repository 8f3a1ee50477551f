"""The app of bench/recovery_storm.py: one consumer in a history group, on the Redis layer.

``STORM_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and ``STORM_PREFIX``
(the run's own key prefix) choose the layer; groups ``storm.*`` keep 200
messages of history, and channels hold 300 (above the history, or a client
as far behind as the capacity loses what does not fit, counted as
mailbox_full). A client joining with ``?wsbridge_recover=...`` gets the
recovery notice, then what it missed, then live messages.

    wsbridge serve bench.servers.recovery_app:application   (from the repository root)
"""

from __future__ import annotations

import os
from typing import Any

from wsbridge import WebsocketConsumer, router, wrap
from wsbridge.layers import configure

GROUP = "storm.h"

configure(
    {
        "default": {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": [os.environ.get("STORM_REDIS_URL", "redis://127.0.0.1:6379/0")],
                "prefix": os.environ.get("STORM_PREFIX", "wsbstorm"),
                "groups": {"storm.*": {"history": 200}},
                # Above the history, as docs/topics/recovery.rst says: a recovery's
                # notice and missed messages go through the connection's mailbox.
                "capacity": 300,
            },
        }
    }
)


@router.websocket("ws/storm/")
class StormConsumer(WebsocketConsumer):
    def connect(self) -> None:
        self.channel_layer.group_add(GROUP, self.channel_name)
        self.accept()

    def disconnect(self, code: int) -> None:
        self.channel_layer.group_discard(GROUP, self.channel_name)

    def storm_msg(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["text"])


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


application = wrap(site)
