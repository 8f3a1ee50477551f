"""The Channels 4 tutorial's synchronous chat (part 3), ported by changing two imports."""

import json

# Channels 4:  from asgiref.sync import async_to_sync
#              from channels.generic.websocket import WebsocketConsumer
#              from django.urls import re_path
from wsbridge import WebsocketConsumer, async_to_sync, re_path


class ChatConsumer(WebsocketConsumer):
    def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        # Join room group
        async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)

        self.accept()

    def disconnect(self, close_code):
        # Leave room group
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    # Receive message from WebSocket
    def receive(self, text_data):
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]

        # Send message to room group
        async_to_sync(self.channel_layer.group_send)(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    # Receive message from room group
    def chat_message(self, event):
        message = event["message"]

        # Send message to WebSocket
        self.send(text_data=json.dumps({"message": message}))


class UnportedChatConsumer(ChatConsumer):
    """The same consumer with asgiref's own async_to_sync left in: an error that names the fix."""

    def connect(self):
        from asgiref.sync import async_to_sync as asgiref_async_to_sync

        asgiref_async_to_sync(self.channel_layer.group_add)("chat_unported", self.channel_name)
        self.accept()


websocket_urlpatterns = [
    re_path(r"ws/chat/(?P<room_name>\w+)/$", ChatConsumer.as_asgi()),
    re_path(r"ws/unported/$", UnportedChatConsumer.as_asgi()),
]
