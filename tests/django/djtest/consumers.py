"""The test project's consumers, on their own Router (WSBRIDGE["ROUTING"])."""

import json
import os
import time

from django.db import connection
from wsbridge_django.auth import login, login_required, logout
from wsbridge_django.binding import BindingConsumer
from wsbridge_django.decorators import (
    channel_session,
    channel_session_user,
    channel_session_user_from_http,
    enforce_ordering,
    http_session_user,
)

from wsbridge import JsonWebsocketConsumer, Router, WebsocketConsumer

from .bindings import NoteBinding
from .models import Note

router = Router()


@router.websocket("ws/echo/")
class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data) if text_data is not None else self.send(
            bytes_data=bytes_data
        )


@router.websocket("ws/whoami/")
class WhoAmI(JsonWebsocketConsumer):
    """Says who the session says the user is; logs in and out on request."""

    def connect(self):
        self.accept()
        self.send_json(self.identity())

    def identity(self):
        user = self.scope["user"]
        return {
            "user": user.get_username() if user.is_authenticated else None,
            "session_key": self.scope["session"].session_key,
            "pid": os.getpid(),
        }

    def receive_json(self, content):
        from django.contrib.auth import get_user_model

        if content.get("login"):
            login(self.scope, get_user_model().objects.get(username=content["login"]))
        elif content.get("logout"):
            logout(self.scope)
        elif "set" in content:
            self.scope["session"]["note"] = content["set"]
            self.scope["session"].save()
        self.send_json(self.identity())


@login_required
@router.websocket("ws/private/")
class Private(JsonWebsocketConsumer):
    def connect(self):
        self.accept()
        self.send_json({"hello": self.scope["user"].get_username()})


@router.websocket("ws/db/")
class DbConsumer(JsonWebsocketConsumer):
    """Each message runs a query; ``sleep`` makes PostgreSQL wait (pg_sleep) first."""

    def receive_json(self, content):
        started = time.monotonic()
        if content.get("sleep"):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [content["sleep"]])
        if content.get("fail"):
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM table_that_does_not_exist")
        if content.get("create"):
            Note.objects.create(title=content["create"])
        self.send_json(
            {
                "notes": Note.objects.count(),
                "vendor": connection.vendor,
                "took": time.monotonic() - started,
                "backend_pid": _backend_pid(),
            }
        )


def _backend_pid():
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@router.websocket("ws/notes/<str:board>/")
class Notes(BindingConsumer):
    bindings = [NoteBinding]

    def binding_groups(self):
        return [f"notes.{self.scope['url_route']['kwargs']['board']}"]


# -- Channels 1.x function consumers and decorators ------------------------------------


@router.on("websocket.connect", path=r"^/v1/chat/$")
@channel_session_user_from_http
def v1_connect(message):
    message.channel_session["greeting"] = "hello" if message.user.is_authenticated else "anon"
    message.reply_channel.send({"accept": True})


@router.on("websocket.receive", path=r"^/v1/chat/$")
@enforce_ordering
@channel_session_user
def v1_receive(message):
    message.reply_channel.send(
        {
            "text": json.dumps(
                {
                    "greeting": message.channel_session["greeting"],
                    "user": message.user.get_username() if message.user.is_authenticated else None,
                    "order": message.content["order"],
                    "echo": message.content["text"],
                }
            )
        }
    )


@router.on("websocket.connect", path=r"^/v1/plain/$")
@http_session_user
def v1_plain_connect(message):
    has_session = message.http_session is not None
    message.reply_channel.send({"accept": True})
    message.reply_channel.send(
        {
            "text": json.dumps(
                {"has_session": has_session, "authenticated": message.user.is_authenticated}
            )
        }
    )


@router.on("websocket.receive", path=r"^/v1/plain/$")
@channel_session
def v1_plain_receive(message):
    count = message.channel_session.get("count", 0) + 1
    message.channel_session["count"] = count
    message.reply_channel.send({"text": str(count)})


@router.channel("djtest.touch")
def touch_note(message):
    """A background channel: the DB handling wraps it too."""
    Note.objects.filter(pk=message.content["pk"]).update(body=message.content["body"])


@router.websocket("ws/notes-pid/<str:board>/")
class NotesWithPid(Notes):
    """Notes, saying first which process serves it (deployment tests)."""

    def connect(self):
        super().connect()
        self.send_json({"pid": os.getpid()})

    def receive_json(self, content):
        if "hog" in content:
            # Keep this whole process busy (no yield): the next connection
            # goes to another worker. Deployment tests use it to spread sockets.
            self.send_json({"hogging": content["hog"]})  # out first: the test waits for it
            end = time.monotonic() + content["hog"]
            while time.monotonic() < end:
                pass
            self.send_json({"hogged": content["hog"]})
            return
        super().receive_json(content)


@router.websocket("ws/room-pid/")
class RoomWithPid(JsonWebsocketConsumer):
    """Joins "djtest.room" and says which process serves it (one-layer tests)."""

    def connect(self):
        self.channel_layer.group_add("djtest.room", self.channel_name)
        self.accept()
        self.send_json({"pid": os.getpid()})

    def receive_json(self, content):
        self.send_json({"hogging": content.get("hog")})  # out first: the test waits for it
        end = time.monotonic() + content.get("hog", 0)
        while time.monotonic() < end:  # busy, no yield: the next socket goes elsewhere
            pass
        self.send_json({"hogged": content.get("hog")})

    def room_message(self, event):
        self.send_json({"text": event["text"], "via": event["pid"]})
