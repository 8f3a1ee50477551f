"""A class consumer named by dotted path from v1_routing.py."""

from wsbridge import WebsocketConsumer


class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data="class:" + text_data)
