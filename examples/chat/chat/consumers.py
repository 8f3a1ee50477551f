"""The Channels tutorial's chat consumer, synchronous, on wsbridge.

Found by wsbridge_django's autodiscovery (an app's consumers.py).
"""

import re

from wsbridge import DenyConnection, JsonWebsocketConsumer, router

ROOM_NAME = re.compile(r"[-\w.]{1,50}", re.ASCII)


@router.websocket("ws/chat/<str:room_name>/")
class ChatConsumer(JsonWebsocketConsumer):
    def connect(self):
        room_name = self.scope["url_route"]["kwargs"]["room_name"]
        if not ROOM_NAME.fullmatch(room_name):
            raise DenyConnection("bad room name")
        self.room_group_name = f"chat_{room_name}"
        self.channel_layer.group_add(self.room_group_name, self.channel_name)
        self.accept()

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
