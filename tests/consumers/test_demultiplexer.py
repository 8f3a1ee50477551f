"""WebsocketDemultiplexer: several streams over one socket with {"stream", "payload"}."""

from __future__ import annotations

import logging

import pytest

from wsbridge import DenyConnection, JsonWebsocketConsumer, WebsocketConsumer
from wsbridge.consumers.demultiplexer import WebsocketDemultiplexer
from wsbridge.testing import Communicator


class EchoStream(JsonWebsocketConsumer):
    def receive_json(self, content):
        self.send_json({"echo": content, "stream": self.stream})


class ChatStream(JsonWebsocketConsumer):
    groups = ["chat"]
    left: list[int] = []

    def receive_json(self, content):
        self.channel_layer.group_send("chat", {"type": "chat.message", "text": content["text"]})

    def chat_message(self, event):
        self.send_json({"text": event["text"]})

    def disconnect(self, code):
        ChatStream.left.append(code)


class TextStream(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=f"plain:{text_data}")


class Demux(WebsocketDemultiplexer):
    consumers = {"echo": EchoStream, "chat": ChatStream, "text": TextStream}


def test_frames_reach_their_stream_and_answers_come_back_wrapped(layer):
    comm = Communicator(Demux, "/ws/")
    assert comm.connect() == (True, None)
    comm.send_json_to({"stream": "echo", "payload": {"n": 1}})
    assert comm.receive_json_from() == {
        "stream": "echo",
        "payload": {"echo": {"n": 1}, "stream": "echo"},
    }
    comm.send_json_to({"stream": "text", "payload": "hi"})
    assert comm.receive_json_from() == {"stream": "text", "payload": "plain:hi"}
    comm.disconnect()


def test_stream_groups_and_layer_events_go_to_the_right_stream(layer):
    ChatStream.left.clear()
    a, b = Communicator(Demux, "/ws/"), Communicator(Demux, "/ws/")
    a.connect(), b.connect()
    assert sorted(layer.group_channels("chat")) == sorted([a.channel_name, b.channel_name])
    a.send_json_to({"stream": "chat", "payload": {"text": "hello"}})
    for comm in (a, b):
        assert comm.receive_json_from() == {"stream": "chat", "payload": {"text": "hello"}}
    # An explicit "stream" key picks the stream even if several could handle the type.
    layer.send(a.channel_name, {"type": "chat.message", "text": "direct", "stream": "chat"})
    assert a.receive_json_from() == {"stream": "chat", "payload": {"text": "direct"}}
    a.disconnect(1001)
    assert ChatStream.left == [1001]
    assert layer.group_channels("chat") == [b.channel_name]
    b.disconnect()


def test_channels_1x_group_send_helper_encodes_the_envelope(layer):
    comm = Communicator(Demux, "/ws/")
    comm.connect()
    Demux.group_send("chat", "echo", {"pushed": True})
    assert comm.receive_json_from() == {"stream": "echo", "payload": {"pushed": True}}
    assert Demux.encode("s", [1]) == {"text": '{"stream": "s", "payload": [1]}'}
    comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        ({"stream": "nope", "payload": {}}, "unknown stream 'nope'"),
        ({"payload": {}}, "unknown stream None"),
        ({"stream": "echo"}, "no 'stream'/'payload' envelope"),
        ([1, 2], "no 'stream'/'payload' envelope"),
        ("not json", "not JSON"),
    ],
)
def test_a_bad_envelope_closes_that_socket_with_1008_and_one_warning(layer, caplog, frame, what):
    bad, good = Communicator(Demux, "/ws/"), Communicator(Demux, "/ws/")
    bad.connect(), good.connect()
    with caplog.at_level(logging.WARNING, logger="wsbridge.consumers"):
        if frame == "not json":
            bad.send_to(text_data="{oops")
        else:
            bad.send_json_to(frame)
        assert bad.receive_close() == 1008
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and what in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    good.send_json_to({"stream": "echo", "payload": 1})
    assert good.receive_json_from()["payload"]["echo"] == 1
    bad.disconnect(), good.disconnect()


def test_one_stream_refusing_refuses_the_handshake(layer):
    class Refusing(JsonWebsocketConsumer):
        def connect(self):
            raise DenyConnection()

    class Strict(WebsocketDemultiplexer):
        consumers = {"echo": EchoStream, "private": Refusing, "chat": ChatStream}

    comm = Communicator(Strict, "/ws/")
    assert comm.connect() == (False, 1000)
    comm.wait()
    assert layer.group_channels("chat") == []


def test_a_stream_closing_closes_the_socket(layer):
    class Closer(JsonWebsocketConsumer):
        def receive_json(self, content):
            self.close(4002)

    class Closing(WebsocketDemultiplexer):
        consumers = {"c": Closer}

    comm = Communicator(Closing, "/ws/")
    comm.connect()
    comm.send_json_to({"stream": "c", "payload": None})
    assert comm.receive_close() == 4002
    comm.disconnect(4002)


def test_a_layer_event_no_stream_handles_is_an_unknown_type(layer):
    comm = Communicator(Demux, "/ws/")
    comm.connect()
    layer.send(comm.channel_name, {"type": "nobody.handles"})
    assert comm.receive_close() == 1011
    assert "no stream consumer handles message type 'nobody.handles'" in str(comm.connection.error)


def test_binary_from_a_stream_consumer_is_an_error(layer):
    class Binary(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.send(bytes_data=b"x")

    class D(WebsocketDemultiplexer):
        consumers = {"b": Binary}

    comm = Communicator(D, "/ws/")
    comm.connect()
    comm.send_json_to({"stream": "b", "payload": "x"})
    assert comm.receive_close() == 1011
    assert "binary frames cannot be multiplexed" in str(comm.connection.error)


def test_a_demultiplexer_without_streams_is_a_type_error(layer):
    with pytest.raises(TypeError, match="maps no stream"):
        Communicator(WebsocketDemultiplexer, "/ws/")
