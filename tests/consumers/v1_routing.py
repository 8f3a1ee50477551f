"""Channels 1.x routing shapes for test_routing_v1.py: dotted paths, dicts, filters."""

from wsbridge import include, route, route_class

seen = []


def ws_connect(message):
    message.reply_channel.send({"accept": True})


def ws_receive(message):
    message.reply_channel.send({"text": "v1:" + message["text"]})


def join(message, room=None):
    seen.append(("join", message.content.get("room"), room))


def leave(message):
    seen.append(("leave", message.content.get("room"), None))


channel_routing = {
    "websocket.connect": "tests.consumers.v1_routing.ws_connect",
    "websocket.receive": "tests.consumers.v1_routing.ws_receive",
}

filtered_routing = [
    route(
        "chat.receive", "tests.consumers.v1_routing.join", command="^join$", room=r"^(?P<room>\w+)$"
    ),
    route("chat.receive", leave, command="^leave$"),
]

prefixed = [
    include("tests.consumers.v1_routing.channel_routing", path=r"^/v1"),
    route_class("tests.consumers.v1_routing_classes.Echo", path=r"^/class/$"),
]
