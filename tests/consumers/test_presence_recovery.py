"""track()/untrack() and recovery as a consumer sees them, on both layers.

Communicators drive real Connections (the runner) over a real layer: the
in-memory one, and the Redis one on the shared server (fresh key prefix).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.layers.conformance import wait_for
from tests.layers.redis_helpers import make_layer_factory
from wsbridge import JsonWebsocketConsumer
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import WebsocketCommunicator

GROUPS = {"chat.*": {"history": 20, "presence": True}}


class User:
    """What django.contrib.auth gives as scope["user"]: the attributes presence reads."""

    is_authenticated = True

    def __init__(self, pk: int, name: str) -> None:
        self.pk, self.name = pk, name

    def get_username(self) -> str:
        return self.name


class Chat(JsonWebsocketConsumer):
    def connect(self):
        self.channel_layer.group_add("chat.room", self.channel_name)
        self.accept()
        self.track("chat.room", {"colour": "red"})

    def receive_json(self, content):
        if "track" in content:
            try:
                self.track(content["track"], content.get("info"))
            except (PermissionError, ValueError) as exc:
                self.send_json({"refused": str(exc)})
            return
        message = {"type": "chat.message", "text": content["text"]}
        self.channel_layer.group_send("chat.room", message)

    def disconnect(self, code):
        self.channel_layer.group_discard("chat.room", self.channel_name)

    def chat_message(self, event):
        self.send_json({"text": event["text"], "position": event["position"]})

    def presence_join(self, event):
        self.send_json({"joined": event["user"], "info": event["info"]})

    def presence_leave(self, event):
        self.send_json({"left": event["user"]})

    def history_recovery(self, event):
        self.send_json({"recovery": event["recovered"], "missed": event["missed"]})


@pytest.fixture(params=["memory", "redis"])
def clayer(request):
    if request.param == "memory":
        layer = MemoryLayer(groups=GROUPS)
        yield layer
        layer.close()
        return
    with make_layer_factory() as make:
        yield make(groups=GROUPS)


def comm(layer, query="", user=None):
    path = "/chat/" + (f"?{query}" if query else "")
    scope = {"user": user} if user is not None else None
    return WebsocketCommunicator(Chat, path, channel_layer=layer, scope=scope)


def recover_query(positions):
    return "wsbridge_recover=" + quote(json.dumps(positions))


def unwrap(text):
    """(stamp or None, the consumer's own JSON or None) of one frame."""
    frame = json.loads(text)
    if "wsb" not in frame:
        return None, frame
    return frame["wsb"], (json.loads(frame["text"]) if "text" in frame else None)


def test_track_lists_the_user_id_and_username_by_default_and_disconnect_untracks(clayer):
    one = comm(clayer, user=User(7, "ann"))
    assert one.connect()[0]
    assert one.receive_json_from() == {"joined": "7", "info": {"username": "ann", "colour": "red"}}
    (entry,) = clayer.presence("chat.room")
    assert (entry.user, entry.info["username"]) == ("7", "ann")
    two = comm(clayer, user=User(8, "bob"))
    assert two.connect()[0]
    assert one.receive_json_from()["joined"] == "8"
    two.disconnect()
    assert one.receive_json_from() == {"left": "8"}
    wait_for(lambda: [e.user for e in clayer.presence("chat.room")] == ["7"])
    one.disconnect()


def test_a_client_cannot_get_tracked_in_a_group_its_consumer_did_not_join(clayer):
    one = comm(clayer, user=User(7, "ann"))
    assert one.connect()[0]
    one.receive_json_from()  # its own join
    one.send_json_to({"track": "chat.secret"})
    assert "not a member" in one.receive_json_from()["refused"]
    assert clayer.presence("chat.secret") == []
    one.send_json_to({"track": "chat.room", "info": {"bio": "x" * 5000}})
    assert "limit" in one.receive_json_from()["refused"]
    one.disconnect()


def test_frames_carry_positions_and_a_reconnect_gets_what_it_missed_exactly_once(clayer):
    first = comm(clayer, recover_query({}))
    assert first.connect()[0]
    assert unwrap(first.receive_from()) == (None, {"joined": None, "info": {"colour": "red"}})
    first.send_json_to({"text": "one"})
    stamp, content = unwrap(first.receive_from())
    assert stamp["g"] == "chat.room" and stamp["p"] == content["position"]
    last_seen = stamp["p"]
    first.disconnect()
    other = comm(clayer)
    assert other.connect()[0]
    for text in ("two", "three"):
        other.send_json_to({"text": text})
    while True:  # this one asked for no recovery: plain frames
        message = other.receive_json_from()
        if message.get("text") == "three":
            break
    again = comm(clayer, recover_query({"chat.room": last_seen}))
    assert again.connect()[0]
    frames = [unwrap(again.receive_from()) for _ in range(5)]
    (page, nothing), (none, told), (s2, two), (s3, three), (_, joined) = frames
    assert page["recovered"] is True and page["missed"] == 2 and nothing is None
    assert none is None and told == {"recovery": True, "missed": 2}
    assert (two["text"], three["text"]) == ("two", "three")
    assert (s2["p"], s3["p"]) == (two["position"], three["position"])
    assert "joined" in joined
    other.send_json_to({"text": "four"})
    while True:
        stamp, content = unwrap(again.receive_from())
        if content and content.get("text"):
            assert content["text"] == "four"
            break
    again.disconnect()
    other.disconnect()


def test_a_forged_position_is_told_as_not_recovered_to_consumer_and_page(clayer):
    client = comm(clayer, recover_query({"chat.room": "forged:99"}))
    assert client.connect()[0]
    frames = [unwrap(client.receive_from()) for _ in range(3)]
    page = [s for s, c in frames if s and "recovered" in s]
    consumer = [c for _, c in frames if c and "recovery" in c]
    assert page and page[0]["recovered"] is False
    assert consumer == [{"recovery": False, "missed": 0}]
    client.disconnect()


@pytest.mark.parametrize(
    "query",
    [
        recover_query({f"chat.g{i}": "x:1" for i in range(65)}),
        "wsbridge_recover=" + "x" * 9000,
        "wsbridge_recover=%5B1%5D",
        recover_query({"bad group!": "x:1"}),
    ],
)
def test_too_many_or_malformed_positions_refuse_the_handshake(clayer, query):
    client = comm(clayer, query)
    assert client.connect() == (False, 1008)


def test_an_adopted_long_poll_session_recovers_from_what_was_sent_not_from_its_first_open(clayer):
    # The first open asked from nothing ({}); by the hand-off the old process had
    # sent "one" and "two". The adopter gets the same query string and the scope
    # the old process kept: it must replay only what came after "two".
    first = comm(clayer, recover_query({}))
    assert first.connect()[0]
    first.receive_from()  # the join
    for text in ("one", "two"):
        first.send_json_to({"text": text})
        assert unwrap(first.receive_from())[1]["text"] == text
    carried = dict(first.scope["wsbridge.positions"])
    first.disconnect()
    clayer.group_send("chat.room", {"type": "chat.message", "text": "three"})
    adopted = WebsocketCommunicator(
        Chat,
        "/chat/?" + recover_query({}),
        channel_layer=clayer,
        scope={"resumed": True, "wsbridge.positions": carried},
    )
    assert adopted.connect()[0]
    frames = [unwrap(adopted.receive_from()) for _ in range(4)]
    texts = [c["text"] for _, c in frames if c and "text" in c]
    assert texts == ["three"]
    assert frames[0][0]["recovered"] is True and frames[0][0]["missed"] == 1
    adopted.disconnect()


def test_a_presence_event_sent_twice_reaches_the_handler_once():
    # A reaper re-sends an event whose sender died before clearing it from the outbox.
    seen = []

    class Watcher(JsonWebsocketConsumer):
        def presence_join(self, event):
            seen.append(("join", event["seq"]))

        def presence_leave(self, event):
            seen.append(("leave", event["seq"]))

    consumer = Watcher({"type": "websocket", "path": "/"}, send=lambda message: None)
    join = {"type": "presence.join", "group": "chat.room", "seq": 7, "user": "u1"}
    for event in (join, dict(join), {**join, "group": "chat.other"}):
        consumer.dispatch(event)
    consumer.dispatch({**join, "type": "presence.leave", "seq": 8})
    consumer.dispatch({**join, "type": "presence.leave", "seq": 8})
    assert seen == [("join", 7), ("join", 7), ("leave", 8)]  # the second join: another group
