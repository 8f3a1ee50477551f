"""Consumers and a plain WSGI app for the long-poll tests (served by lp_server.py).

Routes: ws/echo/ (echo; "close:<code>" closes), ws/chat/<room>/ (a group),
ws/refuse/, ws/crash/, ws/scope/ (sends its scope), ws/flood/ ("flood:N" sends N).
Plain HTTP: /log (events seen by consumers in this process, JSON),
/broadcast?group=G&text=T (a group send), /burst?group=G&n=N (N group sends from
a greenlet that yields after each, as one doing I/O would), /busy?seconds=S (a
greenlet that keeps the hub busy that long), /pid, /page (tests/e2e/page.html).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

import gevent

from wsbridge import Router, WebsocketConsumer, get_channel_layer

routes = Router()
EVENTS: list[dict] = []


@routes.websocket("ws/echo/")
class Echo(WebsocketConsumer):
    def connect(self):
        EVENTS.append({"event": "connect", "path": self.scope["path"]})
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        if text_data is not None and text_data.startswith("close:"):
            self.close(int(text_data[6:]), reason="asked")
        elif text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)

    def disconnect(self, code):
        EVENTS.append({"event": "disconnect", "path": self.scope["path"], "code": code})


@routes.websocket("ws/chat/<str:room>/")
class Chat(WebsocketConsumer):
    def connect(self):
        EVENTS.append(
            {
                "event": "connect",
                "path": self.scope["path"],
                "resumed": self.scope.get("resumed", False),
                "pid": os.getpid(),
            }
        )
        self.group = "chat." + self.scope["url_route"]["kwargs"]["room"]
        self.channel_layer.group_add(self.group, self.channel_name)
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        if text_data == "whoami":  # which process holds this connection
            self.send(text_data=json.dumps({"pid": os.getpid()}))
            return
        self.channel_layer.group_send(
            self.group,
            {"type": "chat.message", "text": text_data, "bytes": bytes_data, "pid": os.getpid()},
        )

    def chat_message(self, event):
        self.send(text_data=event.get("text"), bytes_data=event.get("bytes"))

    def disconnect(self, code):
        self.channel_layer.group_discard(self.group, self.channel_name)
        EVENTS.append({"event": "disconnect", "path": self.scope["path"], "code": code})


@routes.websocket("ws/lane/<str:room>/")
class Lane(WebsocketConsumer):
    """chat.* group messages on the fastlane (no handler), beside an echo."""

    fastlane = {"chat.message": "text"}

    def connect(self):
        self.group = "chat." + self.scope["url_route"]["kwargs"]["room"]
        self.channel_layer.group_add(self.group, self.channel_name)
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=f"echo {text_data}")

    def disconnect(self, code):
        self.channel_layer.group_discard(self.group, self.channel_name)


@routes.websocket("ws/refuse/")
class Refuse(WebsocketConsumer):
    def connect(self):
        self.close()


@routes.websocket("ws/crash/")
class Crash(WebsocketConsumer):
    def connect(self):
        raise RuntimeError("boom (expected by the test)")


@routes.websocket("ws/scope/<str:name>/")
class Scope(WebsocketConsumer):
    def connect(self):
        self.accept("two" if "two" in self.scope["subprotocols"] else None)
        scope = self.scope
        self.send(
            text_data=json.dumps(
                {
                    "type": scope["type"],
                    "transport": scope["transport"],
                    "path": scope["path"],
                    "query_string": scope["query_string"].decode(),
                    "kwargs": scope["url_route"]["kwargs"],
                    "subprotocols": scope["subprotocols"],
                    "cookies": scope["cookies"],
                    "has_headers": any(k == b"host" for k, _ in scope["headers"]),
                    "keys": sorted(scope),
                    "scheme": scope["scheme"],
                    "raw_path": scope["raw_path"].decode(),
                }
            )
        )


@routes.websocket("ws/flood/")
class Flood(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        for i in range(int(text_data.split(":")[1])):
            self.send(text_data=str(i))

    def disconnect(self, code):
        EVENTS.append({"event": "disconnect", "path": self.scope["path"], "code": code})


def _burst(group: str, count: int) -> None:
    for i in range(count):
        get_channel_layer().group_send(group, {"type": "chat.message", "text": f"burst {i}"})
        gevent.sleep(0)


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # never idle, always yielding
        gevent.sleep(0)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/log":
        body = json.dumps(EVENTS).encode()
    elif path == "/broadcast":
        stamp = time.time()
        get_channel_layer().group_send(
            query["group"][0],
            {"type": "chat.message", "text": query.get("text", [str(stamp)])[0]},
        )
        body = b"{}"
    elif path == "/burst":
        gevent.spawn(_burst, query["group"][0], int(query["n"][0]))
        body = b"{}"
    elif path == "/busy":
        gevent.spawn(_busy, min(float(query["seconds"][0]), 10.0))
        body = b"{}"
    elif path == "/page":  # the browser tests' chat page
        body = (Path(__file__).parent.parent / "e2e" / "page.html").read_bytes()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]
    elif path == "/pid":
        body = json.dumps({"pid": os.getpid()}).encode()
    else:
        body = b'"plain app"'
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
