"""The opening handshake over real sockets: every refusal gets its own HTTP status.

The cases are data (STYLE rule 8): a name, what to change in a valid
request, and the status ``wsbridge serve`` must answer.
"""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

from tests.transport.wsclient import handshake_bytes, raw_handshake, read_frame

# (id, path, request changes, expected status)
HANDSHAKES = [
    ("valid", "/echo/", {}, 101),
    ("valid-with-query", "/echo/?a=1", {}, 101),
    ("missing-key", "/echo/", {"headers": {"Sec-WebSocket-Key": None}}, 400),
    ("key-not-16-bytes", "/echo/", {"headers": {"Sec-WebSocket-Key": "c2hvcnQ="}}, 400),
    ("key-not-base64", "/echo/", {"headers": {"Sec-WebSocket-Key": "!!not base64!!"}}, 400),
    ("missing-version", "/echo/", {"headers": {"Sec-WebSocket-Version": None}}, 400),
    ("wrong-version", "/echo/", {"headers": {"Sec-WebSocket-Version": "8"}}, 400),
    ("not-a-get", "/echo/", {"method": "POST"}, 405),
    ("bad-upgrade", "/echo/", {"headers": {"Upgrade": "websocket, h2c"}}, 426),
    ("connection-not-upgrade", "/echo/", {"headers": {"Connection": "keep-alive"}}, 426),
    ("unknown-path", "/nowhere/", {}, 404),
    ("foreign-origin", "/echo/", {"headers": {"Origin": "http://evil.example"}}, 403),
    ("consumer-refuses", "/refuse/", {}, 403),
    ("consumer-crashes", "/crash/", {}, 500),
]


@pytest.mark.parametrize(
    "path, changes, expected",
    [case[1:] for case in HANDSHAKES],
    ids=[case[0] for case in HANDSHAKES],
)
def test_handshake_gets_the_right_status(ws_server, path, changes, expected):
    request = handshake_bytes(path, ws_server.port, **changes)
    status, headers, _, sock = raw_handshake(ws_server.port, request)
    with sock:
        assert status == expected
        if expected == 101:
            assert headers["upgrade"].lower() == "websocket"
        if expected == 405:
            assert headers["allow"] == "GET"
        if path == "/echo/" and "Sec-WebSocket-Version" in changes.get("headers", {}):
            assert headers.get("sec-websocket-version") == "13"


def test_same_origin_is_accepted(ws_server):
    origin = f"http://127.0.0.1:{ws_server.port}"
    request = handshake_bytes("/echo/", ws_server.port, headers={"Origin": origin})
    status, _, _, sock = raw_handshake(ws_server.port, request)
    sock.close()
    assert status == 101


def test_consumer_too_slow_to_accept_gets_503(tight_server):
    status, _, _, sock = raw_handshake(
        tight_server.port, handshake_bytes("/slow/", tight_server.port)
    )
    sock.close()
    assert status == 503
    assert "consumer_handshake_timeout: consumer for /slow/" in tight_server.log()  # counted


def test_subprotocol_chosen_by_the_consumer(ws_server):
    with connect(ws_server.ws_url("/echo/"), subprotocols=["chat.v2", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v2"
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"


def test_accept_headers_and_scope(ws_server):
    with connect(
        ws_server.ws_url("/headers/?x=1"), additional_headers={"Cookie": "a=1; b=two"}
    ) as ws:
        assert ws.response.headers["X-Wsbridge-Test"] == "yes"
        ws.send("scope?")
        path, query, route, cookies, scheme, subprotocols = eval(ws.recv(timeout=5))  # noqa: S307
    assert (path, query, scheme, subprotocols) == ("/headers/", b"x=1", "ws", [])
    assert cookies == {"a": "1", "b": "two"}
    assert route == {"args": (), "kwargs": {}}


def test_url_route_kwargs_reach_the_consumer(ws_server):
    with connect(ws_server.ws_url("/room/lobby/")) as ws:
        ws.send("which room?")
        assert ws.recv(timeout=5) == "lobby"


def test_compression_is_negotiated_with_bounded_windows(ws_server):
    with connect(ws_server.ws_url("/echo/")) as ws:
        offered = ws.response.headers["Sec-WebSocket-Extensions"]
        assert offered.startswith("permessage-deflate")
        assert "server_max_window_bits=12" in offered
        ws.send("z" * 100_000)
        assert ws.recv(timeout=5) == "z" * 100_000


def test_compression_off_switch(tight_server):
    with connect(tight_server.ws_url("/echo/")) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"


def test_plain_http_still_reaches_the_site(ws_server):
    import urllib.request

    with urllib.request.urlopen(ws_server.url("/echo/")) as answer:
        assert answer.read() == b"site GET /echo/"


def test_frames_pipelined_behind_the_handshake_are_not_lost(ws_server):
    from tests.transport.wsclient import frame

    request = handshake_bytes("/echo/", ws_server.port) + frame(0x1, b"early")
    status, _, rest, sock = raw_handshake(ws_server.port, request)
    with sock:
        assert status == 101
        echoed, _ = read_frame(sock, rest)
        assert echoed.data == b"early"
