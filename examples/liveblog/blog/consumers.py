"""Readers: every socket on /ws/liveblog/ is in the "liveblog" group, and that is all."""

from wsbridge import WebsocketConsumer, router

from .signals import GROUP


@router.websocket("ws/liveblog/")
class LiveblogReader(WebsocketConsumer):
    groups = [GROUP]  # joined on connect, left on disconnect; Group.send reaches them
