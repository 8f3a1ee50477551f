"""Presence under Django: entries carry the user's id and username by default."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User

from wsbridge import JsonWebsocketConsumer
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import WebsocketCommunicator


class Room(JsonWebsocketConsumer):
    def connect(self):
        self.channel_layer.group_add("room", self.channel_name)
        self.accept()
        self.track("room", {"typing": False})


def test_a_logged_in_users_entry_has_their_id_and_username_and_anonymous_has_none():
    layer = MemoryLayer(groups={"room": {"presence": True}})
    ann = WebsocketCommunicator(
        Room, "/", channel_layer=layer, scope={"user": User(pk=41, username="ann")}
    )
    guest = WebsocketCommunicator(Room, "/", channel_layer=layer, scope={"user": AnonymousUser()})
    assert ann.connect()[0] and guest.connect()[0]
    entries = {e.user: e.info for e in layer.presence("room")}
    assert entries == {"41": {"username": "ann", "typing": False}, None: {"typing": False}}
    ann.disconnect()
    guest.disconnect()
    assert layer.presence("room") == []
    layer.close()
