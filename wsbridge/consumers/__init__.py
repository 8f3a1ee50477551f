"""What users write: routing, consumers, Channels 1.x messages."""

from .consumer import BaseConsumer, JsonWebsocketConsumer, SyncConsumer, WebsocketConsumer
from .message import Channel, Group, Message
from .routing import Router, URLRouter, include, path, re_path, router

__all__ = [
    "BaseConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
    "JsonWebsocketConsumer",
    "Channel",
    "Group",
    "Message",
    "Router",
    "URLRouter",
    "include",
    "path",
    "re_path",
    "router",
]
