"""The app served by real uWSGI processes in test_uwsgi.py (gevent mode, Redis layer).

It is lp_gunicorn_app (the long-poll test app on the Redis layer: ws/echo/,
ws/chat/<room>/, /broadcast, /pid, /log) plus an SSE stream, so one app
serves WebSocket, long-poll and Server-Sent Events under uWSGI exactly as
under gunicorn. Environment: LP_REDIS_PREFIX, WSBRIDGE_SECRET.

    ws/pidchat/<room>/ a chat (group "chat.<room>") that first sends {"pid": worker pid}
    GET /sse/<room>/   SseConsumer joined to group "chat.<room>" (the chat's group):
                       every /broadcast?group=chat.<room>&text=T arrives as an event.
"""

from __future__ import annotations

import json
import logging
import os

import lp_app
from lp_gunicorn_app import application

from wsbridge import WebsocketConsumer
from wsbridge.consumers.http import SseConsumer

# wsbridge's INFO lines (the reload's closes) into uWSGI's log, which the tests read.
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

__all__ = ["application"]


@lp_app.routes.http("sse/<str:room>/")
class ChatEvents(SseConsumer):
    keepalive_interval = 1.0

    def __init__(self, scope, **kwargs):
        super().__init__(scope, **kwargs)
        self.groups = ["chat." + scope["url_route"]["kwargs"]["room"]]

    def chat_message(self, event):
        self.send_event(data=event["text"])


@lp_app.routes.websocket("ws/pidchat/<str:room>/")
class PidChat(WebsocketConsumer):
    def connect(self):
        self.group = "chat." + self.scope["url_route"]["kwargs"]["room"]
        self.channel_layer.group_add(self.group, self.channel_name)
        self.accept()
        self.send(text_data=json.dumps({"pid": os.getpid()}))

    def receive(self, text_data=None, bytes_data=None):
        self.channel_layer.group_send(self.group, {"type": "chat.message", "text": text_data})

    def chat_message(self, event):
        self.send(text_data=event["text"])

    def disconnect(self, code):
        self.channel_layer.group_discard(self.group, self.channel_name)
