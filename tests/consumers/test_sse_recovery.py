"""SSE recovery: event ids carry positions, Last-Event-ID brings the missed events back."""

from __future__ import annotations

import json

import pytest

from tests.layers.redis_helpers import make_layer_factory
from wsbridge.consumers.http import SseConsumer
from wsbridge.layers.memory import MemoryLayer
from wsbridge.protocol.recovery import format_sse_id, parse_sse_id
from wsbridge.testing import HttpCommunicator

GROUPS = {"news": {"history": 10}}


class News(SseConsumer):
    groups = ["news"]
    keepalive_interval = None

    def news_item(self, event):
        self.send_event(data=event["text"])


@pytest.fixture(params=["memory", "redis"])
def slayer(request):
    if request.param == "memory":
        layer = MemoryLayer(groups=GROUPS)
        yield layer
        layer.close()
        return
    with make_layer_factory() as make:
        yield make(groups=GROUPS)


def events(body: bytes) -> list[dict[str, str]]:
    found = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            found.append(fields)
    return found


def read_until(comm, count):
    got = []
    while len(got) < count:
        got.extend(events(comm.receive_body(timeout=3)))
    return got


def test_event_ids_carry_the_position_and_last_event_id_recovers(slayer):
    first = HttpCommunicator(News, "/events/", channel_layer=slayer)
    first.send_request()
    assert first.receive_start()[0] == 200
    first.receive_body()  # the opening comment
    slayer.group_send("news", {"type": "news.item", "text": "one"})
    (one,) = read_until(first, 1)
    assert one["data"] == "one" and one["id"].startswith("news@")
    first.disconnect()
    slayer.group_send("news", {"type": "news.item", "text": "two"})
    slayer.group_send("news", {"type": "news.item", "text": "three"})
    again = HttpCommunicator(
        News, "/events/", channel_layer=slayer, headers=[("last-event-id", one["id"])]
    )
    again.send_request()
    assert again.receive_start()[0] == 200
    got = read_until(again, 3)
    notice = json.loads(got[0]["data"])
    assert got[0]["event"] == "wsbridge.recovery" and notice["recovered"] and notice["missed"] == 2
    assert [e["data"] for e in got[1:3]] == ["two", "three"]
    assert parse_sse_id(got[2]["id"]) == {"news": slayer.history("news").messages[-1]["position"]}
    again.disconnect()


def test_a_forged_last_event_id_is_not_recovered(slayer):
    slayer.group_send("news", {"type": "news.item", "text": "x"})
    comm = HttpCommunicator(
        News, "/events/", channel_layer=slayer, headers=[("last-event-id", "news@fake:3")]
    )
    comm.send_request()
    assert comm.receive_start()[0] == 200
    (notice,) = read_until(comm, 1)
    assert json.loads(notice["data"])["recovered"] is False
    # the id moves on to the group's current position: the next reconnect starts there
    assert parse_sse_id(notice["id"]) == {"news": str(slayer.history("news").position)}
    comm.disconnect()


def test_sse_ids_round_trip_and_refuse_too_many_groups():
    positions = {"a": "e1:1", "b.c": "e2:9"}
    assert parse_sse_id(format_sse_id(positions)) == positions
    assert parse_sse_id("42") is None  # an application's own id
    from wsbridge.exceptions import BadRequest

    with pytest.raises(BadRequest):
        parse_sse_id(";".join(f"g{i}@e:1" for i in range(65)))


def test_too_many_positions_in_last_event_id_get_400(slayer):
    huge = ";".join(f"g{i}@e:1" for i in range(65))
    comm = HttpCommunicator(
        News, "/events/", channel_layer=slayer, headers=[("last-event-id", huge)]
    )
    response = comm.get_response()
    assert response["status"] == 400 and b"at most 64" in response["body"]
