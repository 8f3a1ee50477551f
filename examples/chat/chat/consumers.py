"""The Channels tutorial's chat consumer, synchronous, on wsbridge, with who is online.

Found by wsbridge_django's autodiscovery (an app's consumers.py). Rooms are
history and presence groups (``GROUPS`` in chatsite/settings.py): a page
that reconnects gets the messages it missed, and every page shows who is
in the room.
"""

import hashlib
import re

from wsbridge import DenyConnection, JsonWebsocketConsumer, router

ROOM_NAME = re.compile(r"[-\w.]{1,50}", re.ASCII)


def person(entry_user, channel, info):
    """How the page names someone: a logged-in user once, each anonymous tab apart."""
    if entry_user is not None:
        return {"key": "u" + entry_user, "name": info.get("username", entry_user)}
    # Channel names are the server's secret: show a short digest instead.
    digest = hashlib.sha256(channel.encode()).hexdigest()[:8]
    return {"key": "c" + digest, "name": "anonymous-" + digest[:4]}


@router.websocket("ws/chat/<str:room_name>/")
class ChatConsumer(JsonWebsocketConsumer):
    def connect(self):
        room_name = self.scope["url_route"]["kwargs"]["room_name"]
        if not ROOM_NAME.fullmatch(room_name):
            raise DenyConnection("bad room name")
        self.room_group_name = f"chat_{room_name}"
        # Joining first: a reconnecting page's missed messages are queued now, in order.
        self.channel_layer.group_add(self.room_group_name, self.channel_name)
        self.accept()
        self.track(self.room_group_name)
        online = {}
        for entry in self.channel_layer.presence(self.room_group_name):
            who = person(entry.user, entry.channel, entry.info)
            online[who["key"]] = who
        self.send_json({"online": sorted(online.values(), key=lambda p: p["name"])})

    def disconnect(self, code):
        if hasattr(self, "room_group_name"):
            self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    def receive_json(self, content):
        message = str(content.get("message", ""))[:2000]
        if not message:
            return
        user = self.scope["user"]
        self.channel_layer.group_send(
            self.room_group_name,
            {
                "type": "chat.message",
                "message": message,
                "user": user.get_username() if user.is_authenticated else "anonymous",
            },
        )

    def chat_message(self, event):
        self.send_json({"message": event["message"], "user": event["user"]})

    # seq orders a room's joins and leaves: events sent by two processes may
    # arrive in another order, and the page ignores one older than it has seen.
    def presence_join(self, event):
        who = person(event["user"], event["channel"], event["info"])
        self.send_json({"joined": who, "seq": event["seq"]})

    def presence_leave(self, event):
        who = person(event["user"], event["channel"], event["info"])
        self.send_json({"left": who["key"], "seq": event["seq"]})
