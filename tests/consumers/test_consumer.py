"""Class consumers: WebsocketConsumer, JsonWebsocketConsumer, SyncConsumer (Channels 4 API)."""

from __future__ import annotations

import json
import logging

import pytest

from wsbridge import (
    DenyConnection,
    JsonWebsocketConsumer,
    StopConsumer,
    SyncConsumer,
    WebsocketConsumer,
)
from wsbridge.exceptions import AcceptConnection, UnknownMessageType
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import Communicator, use_channel_layer


class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        if text_data == "close":
            self.close(4001)
        elif text_data == "bye":
            self.send(text_data="bye", close=True)
        elif text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


class Chat(JsonWebsocketConsumer):
    groups = ["lobby"]
    disconnected_with: list[int] = []

    def connect(self):
        self.room = self.scope["url_route"]["kwargs"].get("room", "lobby")
        self.channel_layer.group_add(f"room.{self.room}", self.channel_name)
        self.accept()

    def receive_json(self, content):
        self.channel_layer.group_send(
            f"room.{self.room}", {"type": "chat.message", "text": content["text"]}
        )

    def chat_message(self, event):
        self.send_json({"text": event["text"]})

    def disconnect(self, code):
        Chat.disconnected_with.append(code)
        self.channel_layer.group_discard(f"room.{self.room}", self.channel_name)


def test_accept_send_and_receive_text_and_bytes(layer):
    with Communicator(Echo, "/ws/echo/") as comm:
        assert comm.connect() == (True, None)
        comm.send_to(text_data="hi")
        assert comm.receive_from() == "hi"
        comm.send_to(bytes_data=b"\x00\xff")
        assert comm.receive_from() == b"\x00\xff"
        assert comm.receive_nothing()


def test_close_with_a_code_and_send_with_close(layer):
    comm = Communicator(Echo, "/ws/echo/")
    comm.connect()
    comm.send_to(text_data="close")
    assert comm.receive_close() == 4001
    comm.disconnect(4001)
    comm = Communicator(Echo, "/ws/echo/")
    comm.connect()
    comm.send_to(text_data="bye")
    assert comm.receive_from() == "bye"
    assert comm.receive_close() == 1000
    comm.disconnect()


def test_accept_chooses_a_subprotocol_and_sends_headers(layer):
    class Proto(WebsocketConsumer):
        def connect(self):
            assert self.scope["subprotocols"] == ["v1", "v2"]
            self.accept("v2", headers=[(b"x-extra", b"1")])

    comm = Communicator(Proto, "/", subprotocols=["v1", "v2"])
    comm.connection.push({"type": "websocket.connect"})
    assert comm.receive_output() == {
        "type": "websocket.accept",
        "subprotocol": "v2",
        "headers": [(b"x-extra", b"1")],
    }
    comm.disconnect()


def test_scope_has_everything_the_issue_lists(layer):
    seen = {}

    class Inspect(WebsocketConsumer):
        def connect(self):
            seen.update(self.scope, channel_name=self.channel_name, layer=self.channel_layer)
            self.accept()

    comm = Communicator(
        Inspect,
        "/ws/a%20b/?q=1",
        headers=[("Cookie", "sessionid=abc; theme=dark"), ("Origin", "http://testserver")],
        subprotocols=["chat"],
    )
    comm.connect()
    for key in (
        "type",
        "path",
        "raw_path",
        "query_string",
        "headers",
        "cookies",
        "client",
        "server",
        "subprotocols",
        "url_route",
    ):
        assert key in seen, key
    assert seen["type"] == "websocket"
    assert seen["path"] == "/ws/a b/" and seen["raw_path"] == b"/ws/a%20b/"
    assert seen["query_string"] == b"q=1"
    assert (b"origin", b"http://testserver") in seen["headers"]
    assert seen["cookies"] == {"sessionid": "abc", "theme": "dark"}
    assert seen["channel_name"].startswith("specific.") and "!" in seen["channel_name"]
    assert seen["layer"] is layer
    comm.disconnect()


def test_groups_are_joined_on_connect_and_left_on_disconnect(layer):
    Chat.disconnected_with.clear()
    a = Communicator(Chat, "/ws/", scope={"url_route": {"args": (), "kwargs": {"room": "r1"}}})
    b = Communicator(Chat, "/ws/", scope={"url_route": {"args": (), "kwargs": {"room": "r1"}}})
    assert a.connect()[0] and b.connect()[0]
    assert sorted(layer.group_channels("lobby")) == sorted([a.channel_name, b.channel_name])
    a.send_json_to({"text": "hello"})
    assert a.receive_json_from() == {"text": "hello"}
    assert b.receive_json_from() == {"text": "hello"}
    a.disconnect(1001)
    assert layer.group_channels("lobby") == [b.channel_name]
    assert layer.group_channels("room.r1") == [b.channel_name]
    assert Chat.disconnected_with == [1001]
    b.disconnect()
    assert layer.group_channels("lobby") == []


def test_layer_events_dispatch_by_type(layer):
    comm = Communicator(Chat, "/ws/")
    comm.connect()
    layer.group_send("lobby", {"type": "chat.message", "text": "from a view"})
    assert comm.receive_json_from() == {"text": "from a view"}
    layer.send(comm.channel_name, {"type": "chat.message", "text": "direct"})
    assert comm.receive_json_from() == {"text": "direct"}
    comm.disconnect()


def test_groups_without_a_channel_layer_is_a_clear_configuration_error(caplog):
    class Grouped(WebsocketConsumer):
        groups = ["g"]

    comm = Communicator(Grouped, "/", channel_layer=MemoryLayer())
    comm.connection.consumer.channel_layer = None  # as if no layer were configured
    assert comm.connect() == (False, 1011)
    assert "needs a channel layer" in caplog.text


@pytest.mark.parametrize("how", ["deny", "close", "no-accept", "close-code"])
def test_refusing_the_handshake(layer, how):
    class Refuse(WebsocketConsumer):
        groups = ["refused"]
        disconnected = []

        def connect(self):
            if how == "deny":
                raise DenyConnection()
            if how == "close":
                self.close()
            if how == "close-code":
                self.close(4403)

        def disconnect(self, code):
            Refuse.disconnected.append(code)

    comm = Communicator(Refuse, "/")
    accepted, code = comm.connect()
    assert accepted is False
    assert code == (4403 if how == "close-code" else 1000)
    # The refused connection ends by itself: disconnect() ran, groups were left.
    comm.wait()
    assert Refuse.disconnected == [1006]
    assert layer.group_channels("refused") == []


def test_accept_connection_raised_deep_inside_connect(layer):
    class Accepting(WebsocketConsumer):
        def connect(self):
            self.check()

        def check(self):
            raise AcceptConnection()

    comm = Communicator(Accepting, "/")
    assert comm.connect() == (True, None)
    comm.disconnect()


def test_stop_consumer_ends_it_and_closes_the_socket(layer):
    class Stopper(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            raise StopConsumer()

    comm = Communicator(Stopper, "/")
    comm.connect()
    comm.send_to(text_data="x")
    assert comm.receive_close() == 1000
    comm.wait()
    assert comm.connection.finished.is_set() and not comm.connection.failed


@pytest.mark.parametrize("kind", ["_private.thing", "nothing.here", ".dot"])
def test_refused_or_unknown_types_close_only_that_connection_with_1011(layer, caplog, kind):
    victim = Communicator(Chat, "/ws/")
    other = Communicator(Chat, "/ws/")
    victim.connect()
    other.connect()
    with caplog.at_level(logging.ERROR, logger="wsbridge.consumers"):
        layer.send(victim.channel_name, {"type": kind})
        assert victim.receive_close() == 1011
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert (
        ("starting with '_'" in message)
        if kind != "nothing.here"
        else (
            "Chat has no handler for message type 'nothing.here'" in message
            and "define nothing_here(self, event)" in message
        )
    )
    assert isinstance(victim.connection.error, UnknownMessageType)
    other.send_json_to({"text": "still here"})
    assert other.receive_json_from() == {"text": "still here"}
    assert layer.group_channels("lobby") == [other.channel_name]
    other.disconnect()


def test_json_consumer_custom_codec_and_binary_frames(layer, caplog):
    class Codec(JsonWebsocketConsumer):
        @classmethod
        def encode_json(cls, content):
            return json.dumps(content, sort_keys=True, separators=(",", ":"))

        @classmethod
        def decode_json(cls, text_data):
            return json.loads(text_data.upper())

        def receive_json(self, content):
            self.send_json({"got": content, "a": 1})

    comm = Communicator(Codec, "/")
    comm.connect()
    comm.send_to(text_data='["x"]')
    assert comm.receive_from() == '{"a":1,"got":["X"]}'
    comm.send_to(bytes_data=b"\x01")
    with pytest.raises(AssertionError, match="1011 after raising ValueError"):
        comm.receive_from()
    assert "it takes JSON text frames" in caplog.text


def test_sync_consumer_handles_raw_events():
    class Raw(SyncConsumer):
        def websocket_connect(self, event):
            self.send({"type": "websocket.accept"})

        def websocket_receive(self, event):
            self.send({"type": "websocket.send", "text": event["text"][::-1]})

        def websocket_disconnect(self, event):
            raise StopConsumer()

    with use_channel_layer():
        comm = Communicator(Raw, "/")
        assert comm.connect() == (True, None)
        comm.send_to(text_data="abc")
        assert comm.receive_from() == "cba"
        comm.disconnect()


def test_channel_layer_alias_picks_another_layer(layer):
    with use_channel_layer(alias="other") as other:

        class Aliased(WebsocketConsumer):
            channel_layer_alias = "other"
            groups = ["g"]

        comm = Communicator(Aliased, "/")
        comm.connect()
        assert comm.consumer.channel_layer is other
        assert other.group_channels("g") == [comm.channel_name]
        assert layer.group_channels("g") == []
        comm.disconnect()


def test_as_asgi_keeps_channels_4_routes_working(layer):
    class Greeter(WebsocketConsumer):
        greeting = "hello"

        def receive(self, text_data=None, bytes_data=None):
            self.send(text_data=self.greeting)

    assert Greeter.as_asgi() is Greeter
    comm = Communicator(Greeter.as_asgi(greeting="hi"), "/")
    comm.connect()
    comm.send_to(text_data="?")
    assert comm.receive_from() == "hi"
    comm.disconnect()
    with pytest.raises(TypeError, match="not an attribute"):
        Greeter.as_asgi(nope=1)


def test_channels_1x_connection_groups_method_is_honoured(layer):
    class Legacy(WebsocketConsumer):
        def connection_groups(self, **kwargs):
            return [f"room-{kwargs['room']}"]

    comm = Communicator(Legacy, "/", scope={"url_route": {"args": (), "kwargs": {"room": "x"}}})
    comm.connect()
    assert layer.group_channels("room-x") == [comm.channel_name]
    comm.disconnect()
    assert layer.group_channels("room-x") == []


def test_send_without_data_is_a_value_error(layer):
    class Empty(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.send()

    comm = Communicator(Empty, "/")
    comm.connect()
    comm.send_to(text_data="x")
    assert comm.receive_close() == 1011
    assert "needs text_data or bytes_data" in str(comm.connection.error)


def test_a_connect_that_returns_without_accepting_is_refused_with_one_info_line(layer, caplog):
    class Forgetful(WebsocketConsumer):
        def connect(self):
            pass  # neither self.accept() nor self.close()

    with caplog.at_level(logging.INFO, logger="wsbridge.consumers"):
        for _ in range(2):
            comm = Communicator(Forgetful, "/forgetful/")
            assert comm.connect() == (False, 1000)
            comm.wait()
    lines = [r.getMessage() for r in caplog.records if "with 403" in r.getMessage()]
    assert len(lines) == 1
    assert "Forgetful" in lines[0] and "/forgetful/" in lines[0]
