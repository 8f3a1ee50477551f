"""Fastlane (wsbridge.consumers.fastlane): layer messages forwarded without a handler.

Real sockets: a wsbridge pywsgi server in this process, a websockets client,
the process's memory layer delivering the group messages.
"""

from __future__ import annotations

import gevent
import pytest
from websockets.sync.client import connect

from wsbridge import Router, WebsocketConsumer, get_channel_layer, wrap
from wsbridge.consumers import runner

router = Router()


@router.websocket("lane/")
class LaneConsumer(WebsocketConsumer):
    groups = ["fastlane.room"]
    fastlane = {"room.text": "text", "room.data": "bytes"}

    def receive(self, text_data=None, bytes_data=None) -> None:
        if text_data == "hold":
            self.send(text_data="start")
            gevent.sleep(0.3)  # busy: group messages meanwhile wait their turn
            self.send(text_data="end")
        else:
            self.send(text_data=f"echo {text_data}")

    def room_other(self, event) -> None:
        self.send(text_data=f"handled {event['n']}")


@router.websocket("plain/")
class PlainConsumer(WebsocketConsumer):
    groups = ["fastlane.plain"]

    def room_text(self, event) -> None:
        self.send(text_data=event["text"])


@pytest.fixture
def server(gevent_server):
    return gevent_server(wrap(lambda e, s: [], router=router))


@pytest.fixture
def wakes(monkeypatch):
    counted: list[object] = []
    real = runner.wake

    def counting(conn):
        counted.append(conn)
        real(conn)

    monkeypatch.setattr(runner, "wake", counting)
    return counted


def _joined(ws, group: str) -> None:
    # The group is joined before the handshake is answered; one echo round trip more.
    ws.send("ping")
    assert ws.recv(timeout=5) == "echo ping"


def test_fastlane_messages_reach_the_client_as_frames_without_a_mailbox_turn(server, wakes):
    layer = get_channel_layer()
    with connect(server.ws_url("/lane/")) as ws:
        _joined(ws, "fastlane.room")
        wakes.clear()
        for i in range(50):
            layer.group_send("fastlane.room", {"type": "room.text", "text": f"m{i}"})
        layer.group_send("fastlane.room", {"type": "room.data", "bytes": b"\x00raw"})
        assert [ws.recv(timeout=5) for _ in range(50)] == [f"m{i}" for i in range(50)]
        assert ws.recv(timeout=5) == b"\x00raw"
        assert wakes == []  # written by the sender: no pump, no handler


def test_a_consumer_without_a_fastlane_takes_the_mailbox(server, wakes):
    layer = get_channel_layer()
    with connect(server.ws_url("/plain/")) as ws:
        ws.send("ping")  # no receive(): nothing answers, but the join is done by now
        gevent.sleep(0.1)
        wakes.clear()
        for i in range(5):
            layer.group_send("fastlane.plain", {"type": "room.text", "text": f"m{i}"})
        assert [ws.recv(timeout=5) for _ in range(5)] == [f"m{i}" for i in range(5)]
        assert wakes  # the same messages through the mailbox and a handler


def test_a_busy_connection_gets_its_fastlane_messages_in_order_after_what_it_is_doing(server):
    layer = get_channel_layer()
    with connect(server.ws_url("/lane/")) as ws:
        _joined(ws, "fastlane.room")
        ws.send("hold")
        assert ws.recv(timeout=5) == "start"
        for i in range(3):
            layer.group_send("fastlane.room", {"type": "room.text", "text": f"g{i}"})
        layer.group_send("fastlane.room", {"type": "room.other", "n": 3})
        layer.group_send("fastlane.room", {"type": "room.text", "text": "g4"})
        got = [ws.recv(timeout=5) for _ in range(6)]
        assert got == ["end", "g0", "g1", "g2", "handled 3", "g4"]


def test_a_fastlane_message_without_text_or_bytes_closes_only_that_connection_with_1011(
    server, caplog
):
    layer = get_channel_layer()
    with connect(server.ws_url("/lane/")) as bad, connect(server.ws_url("/lane/")) as good:
        _joined(bad, "fastlane.room")
        _joined(good, "fastlane.room")
        layer.group_send("fastlane.room", {"type": "room.text", "text": 42})
        with pytest.raises(Exception) as closed:
            bad.recv(timeout=5)
        assert getattr(closed.value, "rcvd", None) is not None
        assert closed.value.rcvd.code == 1011
        # Both members got the bad message; each is closed alone, and says why.
        assert "no text or bytes under 'text'" in caplog.text


def test_a_fastlane_type_with_a_handler_too_is_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="fastlane for 'chat.message' and a handler"):

        class Both(WebsocketConsumer):
            fastlane = {"chat.message": "text"}

            def chat_message(self, event) -> None:
                self.send(text_data=event["text"])


@pytest.mark.parametrize(
    "lane, message",
    [
        (["chat.message"], "must map message types"),
        ({"": "text"}, "is not a layer message type"),
        ({"websocket.receive": "text"}, "is not a layer message type"),
        ({"chat.message": 3}, "must name a key"),
    ],
)
def test_a_malformed_fastlane_is_refused_when_the_class_is_made(lane, message):
    with pytest.raises(TypeError, match=message):
        type("Bad", (WebsocketConsumer,), {"fastlane": lane})


def test_the_testing_communicator_gets_fastlane_messages_through_the_mailbox_in_order():
    from wsbridge.testing import Communicator

    layer = get_channel_layer()
    with Communicator(LaneConsumer, "/lane/") as comm:
        assert comm.connect()[0]
        layer.group_send("fastlane.room", {"type": "room.text", "text": "one"})
        layer.group_send("fastlane.room", {"type": "room.other", "n": 2})
        layer.group_send("fastlane.room", {"type": "room.data", "bytes": b"three"})
        assert comm.receive_from() == "one"
        assert comm.receive_from() == "handled 2"
        assert comm.receive_from() == b"three"


def test_an_http_or_sse_consumer_with_a_fastlane_is_refused_when_the_class_is_made():
    from wsbridge import SseConsumer

    with pytest.raises(TypeError, match="a fastlane is for WebSocket consumers"):
        type("Stream", (SseConsumer,), {"fastlane": {"feed.item": "text"}})
