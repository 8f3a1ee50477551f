"""A site with the live status page on, for tests/e2e/test_status_page.py.

``/room/`` joins the group ``lobby`` and echoes; ``/slow/`` tells its channel
name, then blocks 4 s in ``receive`` so messages sent to it meanwhile overflow
its mailbox (real ``mailbox_full`` drops).
"""

from __future__ import annotations

import os

import gevent

from wsbridge import Router, WebsocketConsumer, wrap

router = Router()
TOKEN = os.environ.get("WSBRIDGE_TEST_STATUS_TOKEN") or None


@router.websocket("room/")
class Room(WebsocketConsumer):
    groups = ["lobby"]

    def receive(self, text_data=None, bytes_data=None) -> None:
        self.send(text_data=text_data)


@router.websocket("slow/")
class Slow(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        self.send(text_data=self.channel_name)

    def receive(self, text_data=None, bytes_data=None) -> None:
        gevent.sleep(4)

    def test_message(self, event) -> None:
        pass


def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"site"]


application = wrap(site, router=router, status_path="/_wsbridge/status", status_token=TOKEN)
