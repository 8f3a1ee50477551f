"""Keepalive, the slow-client bound and graceful shutdown, with real sockets and timers.

These use ``ws_apps.tight`` (pings every 0.3 s, 0.5 s to answer, a 256 KiB
outbound queue) so every limit trips within about a second.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.sync.client import connect

from tests.transport.test_websocket_frames import status_of
from tests.transport.wsclient import close_code, frame, open_raw, read_frame, wait_closed


def test_dead_peer_is_dropped_after_the_ping_timeout(tight_server):
    sock, buffer = open_raw(tight_server.port, "/echo/?dead-peer")
    started = time.monotonic()
    with sock:
        ping, buffer = read_frame(sock, buffer)
        assert ping.opcode is Opcode.PING  # ...which this client never answers
        closing, buffer = read_frame(sock, buffer)
        assert close_code(closing) == 1011
        assert wait_closed(sock, timeout=3)
    assert time.monotonic() - started < 3
    assert status_of(tight_server, "dead-peer") == "1011"


def test_live_peer_answering_pings_stays_connected(tight_server):
    sock, buffer = open_raw(tight_server.port, "/echo/")
    with sock:
        pings = 0
        while pings < 3:  # three rounds: well past interval + timeout
            received, buffer = read_frame(sock, buffer)
            assert received.opcode is Opcode.PING, received
            sock.sendall(frame(0xA, received.data))
            pings += 1
        sock.sendall(frame(0x1, b"alive"))
        while True:
            received, buffer = read_frame(sock, buffer)
            if received.opcode is not Opcode.PING:
                break
        assert received.data == b"alive"


def test_client_that_stops_reading_is_closed_while_others_go_on(tight_server):
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", tight_server.port))
    from tests.transport.wsclient import handshake_bytes, read_response

    slow.sendall(handshake_bytes("/flood/?slow-reader", tight_server.port))
    assert read_response(slow)[0] == 101
    count, size = 400, 32 * 1024  # 12.5 MiB streamed, far past the 256 KiB queue
    received: list[int] = []

    def fast_reader() -> None:
        with connect(tight_server.ws_url("/flood/?fast-reader"), max_size=None) as ws:
            ws.send(f"go {count} {size}")
            for _ in range(count):
                received.append(len(ws.recv(timeout=10)))

    reader = threading.Thread(target=fast_reader)
    with slow:
        slow.sendall(frame(0x1, f"go {count} {size}".encode()))  # ...and never read again
        reader.start()
        assert status_of(tight_server, "slow-reader", timeout=10) == "1013"
        reader.join(30)
    assert received == [size] * count
    with connect(tight_server.ws_url("/echo/")) as ws:
        ws.send("after")
        assert ws.recv(timeout=5) == "after"
    assert "does not read" in tight_server.log()


def test_sigterm_closes_websockets_with_1001_and_exits(wsbridge_serve):
    server = wsbridge_serve("tests.transport.ws_apps:application")
    with connect(server.ws_url("/echo/")) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        exit_status: list[int] = []
        stopper = threading.Thread(target=lambda: exit_status.append(server.stop(timeout=10)))
        stopper.start()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        stopper.join(15)
    assert closed.value.rcvd.code == 1001
    assert exit_status == [0]
