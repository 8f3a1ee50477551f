"""Channels 1.x style: function consumers, Message, reply_channel, Group, Channel."""

from __future__ import annotations

import pytest

from wsbridge import Channel, Group, Message
from wsbridge.consumers.message import enforce_ordering
from wsbridge.exceptions import InvalidChannelName
from wsbridge.testing import Communicator


def test_function_consumers_echo_through_reply_channel(router, layer):
    @router.on("websocket.receive", path=r"^/echo/$")
    def echo(message):
        message.reply_channel.send({"text": message.content["text"]})

    comm = Communicator(router, "/echo/")
    assert comm.connect() == (True, None)  # no connect handler: accepted
    comm.send_to(text_data="hello")
    assert comm.receive_from() == "hello"
    comm.disconnect()


def test_message_content_follows_the_channels_1x_shapes(router, layer):
    seen: list[Message] = []

    @router.on("websocket.connect", path=r"^/room/(?P<room>\w+)/$")
    def connect(message, room):
        seen.append(message)
        assert room == "blue"
        message.reply_channel.send({"accept": True})

    @router.on("websocket.receive", path=r"^/room/(?P<room>\w+)/$")
    def receive(message):  # takes no kwargs: none are passed
        seen.append(message)

    @router.on("websocket.disconnect", path=r"^/room/(?P<room>\w+)/$")
    def disconnect(message, **kwargs):
        seen.append(message)
        assert kwargs == {"room": "blue"}

    comm = Communicator(router, "/room/blue/?a=b", headers=[("X-Test", "1")])
    comm.connect()
    comm.send_to(bytes_data=b"raw")
    comm.disconnect(1001)
    connect_msg, receive_msg, disconnect_msg = seen
    assert connect_msg.channel.name == "websocket.connect"
    assert connect_msg.content["path"] == "/room/blue/"
    assert connect_msg.content["query_string"] == b"a=b"
    assert [b"x-test", b"1"] in connect_msg.content["headers"]
    assert connect_msg.content["reply_channel"] == comm.channel_name
    assert receive_msg["bytes"] == b"raw" and "text" not in receive_msg
    assert disconnect_msg.get("code") == 1001
    assert [m["order"] for m in seen] == [0, 1, 2]
    assert str(connect_msg.reply_channel) == comm.channel_name


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"accept": False}, (False, 1000)),
        ({"close": True}, (False, 1000)),
        ({"close": 4001}, (False, 4001)),
        (None, (False, 1000)),  # the handler neither accepts nor closes
        ({"accept": True, "text": "welcome"}, (True, None)),
    ],
)
def test_connect_handler_replies(router, layer, reply, expected):
    @router.on("websocket.connect")
    def connect(message):
        if reply is not None:
            message.reply_channel.send(reply)

    comm = Communicator(router, "/anything/")
    assert comm.connect() == expected
    if expected[0]:
        assert comm.receive_from() == "welcome"
        comm.disconnect()
    else:
        comm.wait()


def test_group_add_send_discard_reach_the_sockets_as_frames(router, layer):
    @router.on("websocket.connect", path=r"^/chat/$")
    def join(message):
        message.reply_channel.send({"accept": True})
        Group("chat").add(message.reply_channel)

    @router.on("websocket.receive", path=r"^/chat/$")
    def say(message):
        Group("chat").send({"text": message["text"]})

    @router.on("websocket.disconnect", path=r"^/chat/$")
    def leave(message):
        Group("chat").discard(message.reply_channel)

    a, b = Communicator(router, "/chat/"), Communicator(router, "/chat/")
    a.connect(), b.connect()
    a.send_to(text_data="hi all")
    assert a.receive_from() == "hi all" and b.receive_from() == "hi all"
    a.disconnect()
    assert layer.group_channels("chat") == [b.channel_name]
    assert Group("chat").send({"bytes": b"\x01", "close": True}) == 0
    assert b.receive_from() == b"\x01"
    assert b.receive_close() == 1000
    b.disconnect()


def test_channel_send_to_a_reply_channel_from_elsewhere(router, layer):
    router.on("websocket.receive")(lambda message: None)
    comm = Communicator(router, "/x/")
    comm.connect()
    # e.g. a background consumer that got message.reply_channel.name in its content
    Channel(comm.channel_name).send({"text": "later"})
    assert comm.receive_from() == "later"
    Channel(comm.channel_name).send({"close": 4000})
    assert comm.receive_close() == 4000
    comm.disconnect()


def test_background_message_reply_channel_is_a_channel(layer):
    message = Message({"reply_channel": "specific.abc!def", "x": 1}, "work", layer)
    assert message.reply_channel == Channel("specific.abc!def")
    assert message.channel == Channel("work") and "x" in message
    assert Message({"x": 1}, "work", layer).reply_channel is None


def test_bad_names_and_contents_are_clear_errors(layer):
    with pytest.raises(InvalidChannelName, match="invalid"):
        Channel("no spaces allowed")
    with pytest.raises(InvalidChannelName, match="group name"):
        Group("bad!group")
    with pytest.raises(TypeError, match=r"message\['when'\] is a datetime"):
        import datetime

        Channel("ok").send({"when": datetime.datetime.now()})
    with pytest.raises(TypeError, match=r"message\['s'\] is a set"):
        Group("ok").send({"s": {1}})


def test_enforce_ordering_is_a_no_op_in_both_spellings():
    def f(message):
        return message

    assert enforce_ordering(f) is f
    assert enforce_ordering(slight=True)(f) is f


def test_two_functions_for_one_event_and_path_is_an_error(router):
    from wsbridge.exceptions import RoutingError

    router.on("websocket.receive", path="^/a/$")(lambda m: None)
    with pytest.raises(RoutingError, match="already handled"):
        router.on("websocket.receive", path="^/a/$")(print)
    with pytest.raises(RoutingError, match="takes one of"):
        router.on("websocket.send")
