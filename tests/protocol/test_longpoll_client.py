"""The sans-I/O client session against the sans-I/O server session: exact, hand-offs included."""

from __future__ import annotations

import pytest

from wsbridge.exceptions import ConnectionClosed, HTTPError
from wsbridge.protocol.envelope import Frame, decode_frames, encode_frame
from wsbridge.protocol.longpoll import LongPollSession, new_session_id
from wsbridge.protocol.longpoll_client import ClientSession, is_transient


def opened() -> tuple[ClientSession, LongPollSession]:
    server = LongPollSession(new_session_id(), now=0.0)
    server.accept(None)
    client = ClientSession()
    client.open_answered(
        200, {"token": "t1", "subprotocol": None, "poll_timeout": 2, "session_timeout": 9}
    )
    assert (client.token, client.poll_timeout, client.session_timeout) == ("t1", 2.0, 9.0)
    return client, server


def serve_poll(server: LongPollSession, body: dict) -> dict:
    server.ack(body["ack"])
    return {"messages": [encode_frame(frame) for frame in server.pending()]}


def serve_send(server: LongPollSession, body: dict) -> tuple[list[str], dict]:
    applied = server.receive(decode_frames(body["messages"]))
    return [frame.text for frame in applied], {"ack": server.client_seq}


def test_sends_are_numbered_and_resent_until_acked():
    client, server = opened()
    client.queue(text="a")
    client.queue(text="b")
    body = client.send_body()
    assert [m["seq"] for m in body["messages"]] == [1, 2] and body["token"] == "t1"
    applied, _lost_answer = serve_send(server, body)
    assert applied == ["a", "b"]
    client.queue(text="c")
    retry = client.send_body()  # the answer was lost: the same messages, and the new one
    applied, answer = serve_send(server, retry)
    assert applied == ["c"]
    client.send_answered(200, answer)
    assert client.unsent == 0 and client.send_body() is None


def test_polls_ack_what_was_seen_and_drop_resent_frames():
    client, server = opened()
    server.queue(text="x")
    server.queue(data=b"\x01")
    answer = serve_poll(server, client.poll_body())
    assert client.poll_answered(200, answer) == [Frame(1, text="x"), Frame(2, data=b"\x01")]
    assert client.poll_answered(200, answer) == []  # the same answer again: nothing new
    body = client.poll_body(wait=0.5)
    assert body == {"token": "t1", "ack": 2, "wait": 0.5}
    server.queue(text="y")
    assert client.poll_answered(200, serve_poll(server, body)) == [Frame(3, text="y")]
    assert client.poll_answered(409, {"error": "superseded"}) == []


def test_a_new_token_in_an_answer_replaces_the_old_one():
    client, server = opened()
    client.poll_answered(200, {"messages": [], "token": "t2"})
    assert client.poll_body()["token"] == "t2"
    client.queue(text="a")
    client.send_answered(200, {"ack": 1, "token": "t3"})
    assert client.token == "t3"


def test_the_close_frame_ends_the_session():
    client, server = opened()
    server.queue(text="last words")
    server.queue_close(4001, "done")
    frames = client.poll_answered(200, serve_poll(server, client.poll_body()))
    assert frames[-1].close == 4001 and client.closed == (4001, "done")
    with pytest.raises(ConnectionClosed) as closed:
        client.queue(text="too late")
    assert closed.value.code == 4001


def test_errors_carry_the_status_and_say_whether_to_retry():
    client, _server = opened()
    with pytest.raises(HTTPError) as gone:
        client.poll_answered(410, {"error": "session closed"})
    assert gone.value.status == 410 and "session closed" in gone.value.reason
    with pytest.raises(HTTPError) as refused:
        ClientSession().open_answered(403, {"error": "refused"})
    assert refused.value.status == 403
    statuses = (200, 404, 409, 500, 502, 503, 504)
    assert [is_transient(s) for s in statuses] == [False] * 4 + [True] * 3
    with pytest.raises(HTTPError, match="seq 5 after 0"):
        client.poll_answered(200, {"messages": [{"seq": 5, "text": "skipped ahead"}]})
