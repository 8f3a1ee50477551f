"""Limits per IP and per user through real servers (each test its own server and limits)."""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import start_wsbridge_serve
from tests.identity.conftest import get

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(**limits):
        env = {**os.environ, "ID_TEST_LIMITS": json.dumps(limits)}
        served = start_wsbridge_serve("tests.identity.id_app:application", tmp_path, env=env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def ws(server, user):
    return connect(
        server.ws_url("/ws/me/"), additional_headers={"Cookie": f"uid={user}"}, open_timeout=5
    )


def flood_until_closed(sock) -> int | None:
    """Send 500 messages and read until the server closes; its close code."""
    try:
        for i in range(500):
            sock.send(f"m{i}")
        for _ in range(600):
            sock.recv(timeout=5)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    return None


def status_of(server, user) -> int:
    try:
        ws(server, user).close()
    except InvalidStatus as exc:
        return exc.response.status_code
    return 101


def test_concurrent_connections_per_ip_answer_429_then_recover(serve):
    server = serve(max_connections_per_ip=3, handshakes_per_ip=None)
    held = [ws(server, f"u{i}") for i in range(3)]
    assert status_of(server, "u9") == 429
    held.pop().close()
    time.sleep(0.2)
    assert status_of(server, "u9") == 101
    for sock in held:
        sock.close()
    assert "connections_per_ip" in server.log()


def test_handshakes_per_ip_are_rate_limited(serve):
    server = serve(handshakes_per_ip=[2, 4])
    answers = [status_of(server, "h") for _ in range(8)]
    assert answers[:4] == [101] * 4 and 429 in answers[4:]
    time.sleep(1.1)  # two more tokens
    assert status_of(server, "h") == 101


def test_connections_per_user_refuse_the_extra_one_only(serve):
    server = serve(max_connections_per_user=2, handshakes_per_ip=None)
    alice = [ws(server, "alice"), ws(server, "alice")]
    assert status_of(server, "alice") == 403
    assert status_of(server, "bob") == 101
    alice.pop().close()
    time.sleep(0.2)
    assert status_of(server, "alice") == 101
    alice[0].close()


def test_a_flooding_connection_trips_its_own_rate_before_its_ip_budget(serve):
    # Two connections from one address (a NAT): the flooder must be closed by its own
    # per-connection rate while the address's budget still has room for its neighbour.
    server = serve(
        connection_messages=[50, 20],
        ip_messages=[100, 300],
        user_messages=None,
        handshakes_per_ip=None,
    )
    flood, calm = ws(server, "flood" + secrets.token_hex(2)), ws(server, "calm")
    closed = None
    try:
        for i in range(500):
            flood.send(f"m{i}")
        for _ in range(600):
            flood.recv(timeout=5)
    except ConnectionClosed as exc:
        closed = exc.rcvd
    assert closed is not None and closed.code == 4429
    assert closed.reason.startswith("connection messages"), closed.reason
    for i in range(20):
        calm.send(f"still ok {i}")
        assert calm.recv(timeout=5) == f"still ok {i}"
    calm.close()


def test_a_flooding_user_is_closed_with_4429_and_others_go_on(serve):
    server = serve(user_messages=[50, 20], handshakes_per_ip=None)
    flood, calm = ws(server, "flood" + secrets.token_hex(2)), ws(server, "calm")
    code = flood_until_closed(flood)
    assert code == 4429
    calm.send("still ok")
    assert calm.recv(timeout=5) == "still ok"
    calm.close()
    assert get(server, "/status")["tokens"] is not None


def test_a_user_closed_for_flooding_may_not_reconnect_until_the_penalty_ends(serve):
    # Without the penalty a reconnecting flooder gets a fresh burst every time.
    server = serve(connection_messages=[50, 20], handshakes_per_ip=None, rate_limit_penalty=1.5)
    flooder = "flood" + secrets.token_hex(2)
    flood = ws(server, flooder)
    code = flood_until_closed(flood)
    closed_at = time.monotonic()
    assert code == 4429
    assert status_of(server, flooder) == 403
    assert status_of(server, "neighbour") == 101  # same address, another user
    time.sleep(max(0.0, closed_at + 1.6 - time.monotonic()))
    assert status_of(server, flooder) == 101
    assert "penalised: user" in server.log()


def test_a_client_closed_for_flooding_is_not_read_further_and_let_go_at_once(serve):
    # After the 4429 close frame, a flooder that goes on sending (and never answers the
    # close) must not keep the server parsing its frames until close_timeout (5 s).
    from tests.transport.wsclient import (
        Opcode,
        close_code,
        frame,
        handshake_bytes,
        raw_handshake,
        read_frame,
    )

    server = serve(
        connection_messages=[50, 20], ip_messages=None, user_messages=None, handshakes_per_ip=None
    )
    request = handshake_bytes("/ws/me/", server.port, headers={"Cookie": "uid=flooder"})
    status, _, rest, sock = raw_handshake(server.port, request)
    assert status == 101
    chunk = frame(Opcode.TEXT, b"flood") * 100
    closed_at = ended_at = None
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            sock.settimeout(2)
            sock.sendall(chunk)
            if closed_at is None:
                try:
                    while True:  # read what is there: echoes, then the close frame
                        got, rest = read_frame(sock, rest, timeout=0.05)
                        if got.opcode is Opcode.CLOSE:
                            assert close_code(got) == 4429
                            closed_at = time.monotonic()
                            break
                except TimeoutError:
                    pass
    except (ConnectionError, OSError):
        ended_at = time.monotonic()
    finally:
        sock.close()
    assert closed_at is not None and ended_at is not None
    # The server stopped reading and let the connection go (a reset on our sends), where
    # before it read and dropped the flood until close_timeout (5 s).
    assert ended_at - closed_at < 2.5, ended_at - closed_at


def test_an_anonymous_address_closed_for_flooding_gets_429_with_retry_after(tmp_path):
    import socket

    from tests.transport.wsclient import Opcode, frame, handshake_bytes, read_response, wait_closed

    server = start_wsbridge_serve("tests.transport.ws_apps:application", tmp_path)  # defaults

    def handshake(source: str) -> tuple[int, dict[str, str], socket.socket]:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(handshake_bytes("/echo/", server.port))
        status, headers, _ = read_response(sock)
        return status, headers, sock

    try:
        status, _, sock = handshake("127.0.0.2")
        assert status == 101
        sock.sendall(frame(Opcode.TEXT, b"flood") * 3000)  # over the 2,500 burst
        assert wait_closed(sock, timeout=10)
        sock.close()
        status, headers, sock = handshake("127.0.0.2")
        sock.close()
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 10, (status, headers)
        status, _, sock = handshake("127.0.0.1")  # another address is not concerned
        sock.close()
        assert status == 101
        assert "penalised: websocket from 127.0.0.2" in server.log()
    finally:
        server.stop()
