"""Channels 1.x multi-room chat (after channels-examples' multichat), imports changed only.

The socket's consumers forward each command to the ``chat.receive``
channel, which a worker (another process) runs; it finds the connection's
session and user by the message's ``reply_channel``, joins groups on the
connection's behalf and answers on its reply channel.
"""

import json
import os

# Channels 1.x:  from channels import Channel, Group
#                from channels.auth import channel_session_user, channel_session_user_from_http
from wsbridge_django.decorators import channel_session_user, channel_session_user_from_http

from wsbridge import Channel, Group


@channel_session_user_from_http
def ws_connect(message):
    message.reply_channel.send({"accept": True})
    message.channel_session["rooms"] = []


def ws_receive(message):
    payload = json.loads(message["text"])
    payload["reply_channel"] = message.content["reply_channel"]
    Channel("chat.receive").send(payload)


@channel_session_user
def ws_disconnect(message):
    for room in message.channel_session.get("rooms", []):
        Group(f"room-{room}").discard(message.reply_channel)
        Group(f"room-{room}").send(
            {
                "text": json.dumps(
                    {
                        "left": room,
                        "user": _name(message.user),
                        "rooms": message.channel_session["rooms"],
                    }
                )
            }
        )


@channel_session_user
def chat_join(message):
    room = message["room"]
    Group(f"room-{room}").add(message.reply_channel)
    message.channel_session["rooms"] = sorted(set(message.channel_session["rooms"]).union([room]))
    message.reply_channel.send(
        {"text": json.dumps({"join": room, "user": _name(message.user), "pid": os.getpid()})}
    )


@channel_session_user
def chat_leave(message):
    room = message["room"]
    Group(f"room-{room}").discard(message.reply_channel)
    message.channel_session["rooms"] = [r for r in message.channel_session["rooms"] if r != room]
    message.reply_channel.send({"text": json.dumps({"leave": room})})


@channel_session_user
def chat_send(message):
    room = message["room"]
    if room not in message.channel_session["rooms"]:
        message.reply_channel.send({"text": json.dumps({"error": "not in room " + room})})
        return
    Group(f"room-{room}").send(
        {
            "text": json.dumps(
                {"room": room, "user": _name(message.user), "message": message["message"]}
            )
        }
    )


def silent_connect(message):
    """A 1.x connect consumer that neither accepts nor refuses (1.x left it hanging)."""


def _name(user):
    return user.get_username() if user.is_authenticated else None
