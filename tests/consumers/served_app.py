"""A WSGI app for test_served.py: consumers that block, crash, or echo, under `wsbridge serve`."""

from __future__ import annotations

import time

import wsbridge
from wsbridge import Router, WebsocketConsumer

router = Router()


@router.websocket("ws/echo/")
class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)


@router.websocket("ws/sleep/")
class Sleeper(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        time.sleep(float(text_data))  # plain blocking call; gevent-patched by `wsbridge serve`
        self.send(text_data="slept")


@router.websocket("ws/crash/")
class Crasher(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        if text_data == "boom":
            raise RuntimeError("served consumer exploded")
        self.send(text_data=text_data)


def site(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nothing here\n"]


application = wsbridge.wrap(site, router=router)
