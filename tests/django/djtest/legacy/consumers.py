"""Channels 1.x generic consumers: the demultiplexers in front of the bindings."""

from wsbridge import WebsocketDemultiplexer  # was: from channels.generic.websockets import

from .bindings import IntegerValueBinding


class IntValueDemultiplexer(WebsocketDemultiplexer):
    """Channels 1.1: bindings listed as stream consumers."""

    consumers = {"intval": IntegerValueBinding.consumer}

    def connection_groups(self):
        return ["intval-updates"]


class NoteDemultiplexer(WebsocketDemultiplexer):
    """Channels 1.0: streams mapped to channels, which a worker runs."""

    http_user = True
    mapping = {"v1notes": "binding.v1notes"}

    def connection_groups(self, **kwargs):
        return ["v1notes-v1"]
