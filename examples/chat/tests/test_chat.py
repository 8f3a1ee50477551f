"""The chat example, served for real: pages, and two clients chatting in a room."""

from __future__ import annotations

import json

from websockets.sync.client import connect

PRESENCE_KEYS = {"online", "joined", "left"}


def said(ws):
    """The next chat message on ``ws``, skipping who-is-online updates."""
    while True:
        frame = json.loads(ws.recv(timeout=5))
        if not PRESENCE_KEYS & set(frame):
            return frame


def test_index_and_room_pages_are_served(example_server):
    server = example_server("chat", "chatsite", "CHAT_DB")
    status, body = server.get("/")
    assert status == 200 and "What chat room" in body
    status, body = server.get("/chat/lobby/")
    assert status == 200 and "/_wsbridge/wsbridge.js" in body
    assert server.get("/_wsbridge/wsbridge.js")[0] == 200


def test_two_clients_in_a_room_hear_each_other_and_other_rooms_hear_nothing(example_server):
    server = example_server("chat", "chatsite", "CHAT_DB")
    origin = {"Origin": server.url}
    with (
        connect(server.ws_url + "/ws/chat/lobby/", additional_headers=origin) as alice,
        connect(server.ws_url + "/ws/chat/lobby/", additional_headers=origin) as bob,
        connect(server.ws_url + "/ws/chat/kitchen/", additional_headers=origin) as carol,
    ):
        alice.send(json.dumps({"message": "hello bob"}))
        assert said(bob) == {"message": "hello bob", "user": "anonymous"}
        assert said(alice)["message"] == "hello bob"
        bob.send(json.dumps({"message": "hi alice"}))
        assert said(alice)["message"] == "hi alice"
        assert said(bob)["message"] == "hi alice"
        carol.send(json.dumps({"message": "anyone?"}))
        assert said(carol)["message"] == "anyone?"
        bob.send(json.dumps({"message": "last"}))
        assert said(alice)["message"] == "last"  # not carol's


def test_a_page_from_another_site_cannot_open_the_chat(example_server):
    from websockets.exceptions import InvalidStatus

    server = example_server("chat", "chatsite", "CHAT_DB")
    try:
        connect(
            server.ws_url + "/ws/chat/lobby/", additional_headers={"Origin": "https://evil.example"}
        )
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
    else:
        raise AssertionError("a foreign Origin was accepted")


def test_pages_see_who_is_online_and_hear_joins_and_leaves(example_server):
    server = example_server("chat", "chatsite", "CHAT_DB")
    origin = {"Origin": server.url}
    with connect(server.ws_url + "/ws/chat/lobby/", additional_headers=origin) as alice:
        first = json.loads(alice.recv(timeout=5))
        assert len(first["online"]) == 1
        me = first["online"][0]["key"]
        with connect(server.ws_url + "/ws/chat/lobby/", additional_headers=origin) as bob:
            assert len(json.loads(bob.recv(timeout=5))["online"]) == 2
            frames = [json.loads(alice.recv(timeout=5)) for _ in range(2)]
            joined = [f["joined"]["key"] for f in frames if "joined" in f]
            assert me in joined and len(set(joined)) == 2  # its own join, then bob's
            bob_key = next(k for k in joined if k != me)
        left = json.loads(alice.recv(timeout=5))
        assert left["left"] == bob_key and left["seq"] == max(f["seq"] for f in frames) + 1
