"""The long-poll transport over real HTTP against a real gevent server process."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from lp_support import LP, Client, Server, request, wait_for

from wsbridge.protocol.longpoll import TokenSigner, new_session_id

SECRET = "test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    srv = Server(
        "--secret",
        SECRET,
        "--session-timeout",
        "1.5",
        "--poll-timeout",
        "3",
        "--user-from-header",
        "--max-buffer",
        "20",
        "--max-body",
        "4096",
        "--allowed-origin",
        "http://friend.test",
        "--allowed-origin",
        "http://127.0.0.1:*",
    )
    yield srv
    srv.stop()


def log(port: int) -> list[dict]:
    return request(port, "/log", method="GET")[1]


def test_open_poll_send_echo_and_the_scope_looks_like_a_websocket(server):
    client = Client(server.port, "/ws/echo/")
    assert client.send("hello", "world") == 2
    assert client.texts_until(2) == ["hello", "world"]
    status, body = request(
        server.port, LP + "/open", {"path": "/ws/scope/x/?a=1", "subprotocols": ["one", "two"]}
    )
    assert status == 200 and body["subprotocol"] == "two"
    scoped = Client.from_token(server.port, body["token"])
    scope = json.loads(scoped.texts_until(1)[0])
    assert {k: v for k, v in scope.items() if k != "keys"} == {
        "type": "websocket",
        "transport": "longpoll",
        "path": "/ws/scope/x/",
        "query_string": "a=1",
        "kwargs": {"name": "x"},
        "subprotocols": ["one", "two"],
        "cookies": {},
        "has_headers": True,
        "scheme": "ws",
        "raw_path": "/ws/scope/x/",
    }


def test_the_scope_has_the_same_shape_as_over_websocket(server):
    from websockets.sync.client import connect

    headers = {"Cookie": "sessionid=abc"}
    url = f"ws://127.0.0.1:{server.port}/ws/scope/x/?a=1"
    with connect(url, subprotocols=["one", "two"], additional_headers=headers) as ws:
        over_ws = json.loads(ws.recv(timeout=10))
    status, body = request(
        server.port,
        LP + "/open",
        {"path": "/ws/scope/x/?a=1", "subprotocols": ["one", "two"]},
        headers=headers,
    )
    client = Client.from_token(server.port, body["token"])
    over_lp = json.loads(client.texts_until(1)[0])
    assert over_ws.pop("transport") == "websocket" and over_lp.pop("transport") == "longpoll"
    assert over_lp == over_ws
    assert over_lp["cookies"] == {"sessionid": "abc"}


def test_bytes_travel_as_base64(server):
    client = Client(server.port, "/ws/echo/")
    status, body = client.call("send", messages=[{"seq": 1, "bytes": "AAEC"}])
    assert status == 200 and body == {"ack": 1}
    frames = client.poll()
    assert frames == [{"seq": 1, "bytes": "AAEC"}]


def test_a_lost_poll_response_is_delivered_again_without_duplicates(server):
    client = Client(server.port, "/ws/echo/")
    client.send("a", "b")
    wait_for(lambda: client.call("poll", ack=0)[1]["messages"])
    # the client never saw that answer: it polls again with the same ack
    status, again = client.call("poll", ack=0)
    assert [m["text"] for m in again["messages"]] == ["a", "b"]
    client.send("c")
    assert client.texts_until(3) == ["a", "b", "c"]
    status, body = client.call(
        "poll",
        ack=3,
    )
    assert status == 200 and body["messages"] == []  # held until the poll timeout: nothing new


def test_a_retried_send_is_applied_once_and_order_is_kept(server):
    client = Client(server.port, "/ws/echo/")
    batch = [{"seq": 1, "text": "one"}, {"seq": 2, "text": "two"}]
    assert client.call("send", messages=batch) == (200, {"ack": 2})
    assert client.call("send", messages=batch) == (200, {"ack": 2})  # the retry
    assert client.call("send", messages=batch[1:] + [{"seq": 3, "text": "three"}]) == (
        200,
        {"ack": 3},
    )
    client.sent = 3
    got = client.texts_until(3)
    for start in range(4, 54, 10):  # batches below the server's max_buffer of 20
        client.send(*[str(i) for i in range(start, start + 10)])
        got += client.texts_until(10)
    assert got == ["one", "two", "three"] + [str(i) for i in range(4, 54)]
    status, body = client.call("send", messages=[{"seq": 60, "text": "gap"}])
    assert status == 400 and "skips ahead" in body["error"]


def test_a_second_poll_replaces_the_first_which_gets_409(server):
    client = Client(server.port, "/ws/echo/")
    results: list = []
    polls = [
        threading.Thread(target=lambda: results.append(client.call("poll", ack=0)))
        for _ in range(2)
    ]
    polls[0].start()
    polls[1].start()
    # the poll that arrived first is answered 409 at once; the other stays parked
    wait_for(lambda: results, timeout=10)
    assert results[0][0] == 409 and "superseded" in results[0][1]["error"]
    client.send("x")
    for poll in polls:
        poll.join(10)
    assert results[1][0] == 200 and results[1][1]["messages"][0]["text"] == "x"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{nope", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"token": 5, "ack": 0}', "'token'"),
        (b'{"token": "a.b.c", "ack": 0}', "malformed"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_get_400_with_a_reason(server, raw, reason):
    status, body = request(server.port, LP + "/poll", raw=raw)
    assert status == 400 and reason in body["error"]


def test_bad_frames_and_acks_get_400(server):
    client = Client(server.port, "/ws/echo/")
    status, body = client.call("send", messages=[{"seq": 1, "bytes": "***"}])
    assert status == 400 and "base64" in body["error"]
    status, body = client.call("send", messages="hi")
    assert status == 400 and "JSON array" in body["error"]
    status, body = client.call("poll", ack=5)
    assert status == 400 and "beyond" in body["error"]
    status, body = request(server.port, LP + "/open", {"path": "ws/echo/"})
    assert status == 400 and "'path'" in body["error"]
    client.send("still fine")
    assert client.texts_until(1) == ["still fine"]


def test_a_truncated_body_gets_400(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST " + LP.encode() + b"/poll HTTP/1.1\r\nHost: x\r\n"
            b'Content-Length: 100\r\nConnection: close\r\n\r\n{"tok'
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"truncated" in answer


def test_an_oversized_body_gets_413_without_being_read(server):
    status, body = request(server.port, LP + "/send", raw=b"x" * 5000)
    assert status == 413 and "4096" in body["error"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST " + LP.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 999999999\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_unknown_routes_endpoints_and_methods(server):
    assert request(server.port, LP + "/open", {"path": "/nowhere/"})[0] == 404
    assert request(server.port, LP + "/frobnicate", {})[0] == 404
    assert request(server.port, LP + "/poll", method="GET")[0] == 405
    assert request(server.port, "/other")[1] == "plain app"


def test_refused_and_crashing_consumers(server):
    status, body = request(server.port, LP + "/open", {"path": "/ws/refuse/"})
    assert status == 403
    status, body = request(server.port, LP + "/open", {"path": "/ws/crash/"})
    assert status == 500


def test_unknown_session_is_404_closed_session_is_410(server):
    client = Client(server.port, "/ws/echo/")
    owner = TokenSigner.parse(client.token).owner
    made_up = TokenSigner(SECRET.encode()).sign(new_session_id(), owner)
    assert request(server.port, LP + "/poll", {"token": made_up, "ack": 0})[0] == 404
    assert client.call("close", code=1000) == (200, {"closed": True})
    for op in ("poll", "send", "close"):
        status, body = client.call(op, ack=0, messages=[])
        assert status == 410, (op, status, body)
    wait_for(lambda: {"event": "disconnect", "path": "/ws/echo/", "code": 1000} in log(server.port))


def test_forged_and_replayed_tokens_are_refused(server):
    client = Client(server.port, "/ws/echo/")
    sid, owner, mac = client.token.split(".")
    forged = ".".join((sid, owner, "A" * len(mac)))
    assert request(server.port, LP + "/poll", {"token": forged, "ack": 0})[0] == 403
    other_key = TokenSigner(b"x" * 32).sign(
        TokenSigner.parse(client.token).sid, TokenSigner.parse(client.token).owner
    )
    assert request(server.port, LP + "/poll", {"token": other_key, "ack": 0})[0] == 403
    # replayed from a page of another (allowed) origin: bound to the opener's origin
    status, _ = request(
        server.port,
        LP + "/poll",
        {"token": client.token, "ack": 0},
        headers={"Origin": "http://friend.test"},
    )
    assert status == 403
    client.send("unharmed")
    assert client.texts_until(1) == ["unharmed"]


def test_cross_origin_is_refused_unless_allowed(server):
    status, body = request(
        server.port, LP + "/open", {"path": "/ws/echo/"}, headers={"Origin": "http://evil.test"}
    )
    assert status == 403 and "cross-origin" in body["error"]
    same = Client(server.port, "/ws/echo/", origin=f"http://127.0.0.1:{server.port}")
    same.send("same")
    assert same.texts_until(1) == ["same"]
    friend = Client(server.port, "/ws/echo/", origin="http://friend.test")
    friend.send("friend")
    assert friend.texts_until(1) == ["friend"]
    conn_headers = _headers(server.port, "http://friend.test")
    assert conn_headers.get("access-control-allow-origin") == "http://friend.test"


def _headers(port: int, origin: str) -> dict[str, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("OPTIONS", LP + "/open", headers={"Origin": origin})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 204
    return {k.lower(): v for k, v in response.getheaders()}


def test_a_silent_session_expires_and_the_consumer_is_told(server):
    client = Client(server.port, "/ws/chat/expiry/")
    # session_timeout is 1.5s: say nothing and watch the consumer's log
    wait_for(
        lambda: (
            {"event": "disconnect", "path": "/ws/chat/expiry/", "code": 1006} in log(server.port)
        )
    )
    assert client.call("poll", ack=0)[0] == 410


def test_server_close_is_the_last_frame_and_acking_it_ends_the_session(server):
    client = Client(server.port, "/ws/echo/")
    client.send("before", "close:4001")
    frames = []
    wait_for(lambda: frames.extend(client.poll()) or client.closed)
    assert [f.get("text") for f in frames[:-1]] == ["before"]
    assert client.closed == (4001, "asked")
    assert client.call("poll", ack=client.seen)[0] == 410


def test_a_client_that_does_not_keep_up_is_closed_with_1013(server):
    client = Client(server.port, "/ws/flood/")
    client.send("flood:100")
    frames = []
    wait_for(lambda: frames.extend(client.poll()) or client.closed)
    assert client.closed[0] == 1013
    assert len(frames) == 21  # max_buffer texts, then the close
    wait_for(
        lambda: {"event": "disconnect", "path": "/ws/flood/", "code": 1013} in log(server.port)
    )


def test_tokens_are_bound_to_the_user_who_opened_the_session(server):
    alice = {"X-Test-User": "alice"}
    status, body = request(server.port, LP + "/open", {"path": "/ws/echo/"}, headers=alice)
    token = body["token"]
    assert (
        request(
            server.port,
            LP + "/send",
            {"token": token, "messages": []},
            headers={"X-Test-User": "mallory"},
        )[0]
        == 403
    )
    assert request(server.port, LP + "/send", {"token": token, "messages": []})[0] == 403
    assert request(server.port, LP + "/send", {"token": token, "messages": []}, headers=alice) == (
        200,
        {"ack": 0},
    )


def test_closed_and_expired_sessions_leave_nothing_behind(server):
    clients = [Client(server.port, "/ws/echo/") for _ in range(20)]
    for client in clients[:10]:
        client.call("close", code=1000)
    # the other ten never poll again: they expire; the layer detaches every consumer
    stats = wait_for(
        lambda: (lambda s: s if s["sessions"] == 0 else None)(
            request(server.port, "/lpstats", method="GET")[1]
        ),
        timeout=15,
    )
    assert stats["attached"] == 1  # only the transport's own channel is left
    assert stats["tombstones"] >= 20


def test_server_shutdown_answers_held_polls_with_1001():
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            "lp_serve_app:application",
            "--port",
            "0",
            "--log-level",
            "warning",
        ],
        cwd=here,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.getcwd()])},
    )
    try:
        port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
        client = Client(port, "/ws/echo/")
        answer: dict = {}
        poll = threading.Thread(target=lambda: answer.update(r=client.call("poll", ack=0)))
        poll.start()
        # the poll is held (nothing to say for 20s); now stop the server
        wait_for(lambda: request(port, "/_wsbridge/test-parked", method="GET")[1] == 1)
        proc.send_signal(signal.SIGTERM)
        poll.join(15)
        status, body = answer["r"]
        assert status == 200
        assert body["messages"] == [{"seq": 1, "close": 1001, "reason": "server shutting down"}]
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_fastlane_group_messages_reach_a_long_poll_session_in_order_with_its_echoes(server):
    client = Client(server.port, "/ws/lane/fast/")
    assert client.send("one") == 1
    assert client.texts_until(1) == ["echo one"]
    for i in range(5):
        assert request(server.port, f"/broadcast?group=chat.fast&text=g{i}", method="GET")[0] == 200
    client.send("two")
    assert client.texts_until(6) == [f"g{i}" for i in range(5)] + ["echo two"]
