"""1,000 concurrent WebSockets open, echo and close; no file descriptor stays open.

The client side is the ``websockets`` sans-I/O ClientProtocol over plain
sockets (1,000 threads would measure the client, not the server). The
server's descriptors are counted in ``/proc/<pid>/fd`` before and after,
and its RSS is read at the peak; the figures are printed (run with ``-s``).
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections import deque

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.conftest import start_wsbridge_serve

CONNECTIONS = 1000
COMPRESS = True  # browsers offer permessage-deflate; idle connections hold no zlib state


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class Client:
    """One sans-I/O client connection on a blocking socket."""

    def __init__(self, port: int, path: str) -> None:
        self.protocol = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{port}{path}"),
            extensions=[ClientPerMessageDeflateFactory(client_max_window_bits=True)]
            if COMPRESS
            else None,
        )
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.pending: deque[Response | Frame] = deque()
        self.protocol.send_request(self.protocol.connect())
        self.flush()

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def next_event(self) -> Response | Frame:
        while not self.pending:
            data = self.sock.recv(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.pending.extend(self.protocol.events_received())
            if not data and not self.pending:
                raise ConnectionError("closed before the expected event")
        return self.pending.popleft()


def test_thousand_connections_open_echo_close_and_leave_no_descriptor(tmp_path):
    raise_fd_limit(CONNECTIONS + 500)
    server = start_wsbridge_serve("tests.transport.ws_apps:application", tmp_path)
    try:
        pid = server.pid
        fds_before = fd_count(pid)
        warm = Client(server.port, "/echo/")  # lazy imports and first allocations
        assert isinstance(warm.next_event(), Response)
        warm.protocol.send_close(1000)
        warm.flush()
        warm.next_event()
        warm.sock.close()
        assert wait_until(lambda: fd_count(pid) <= fds_before, 5)
        rss_before = rss_kib(pid)

        started = time.monotonic()
        clients = [Client(server.port, f"/echo/?{i}") for i in range(CONNECTIONS)]
        for client in clients:
            response = client.next_event()
            assert isinstance(response, Response) and response.status_code == 101
        assert all(bool(c.protocol.extensions) == COMPRESS for c in clients)
        fds_open, rss_open = fd_count(pid), rss_kib(pid)
        for i, client in enumerate(clients):
            client.protocol.send_text(f"hello {i}".encode())
            client.flush()
        for i, client in enumerate(clients):
            echoed = client.next_event()
            assert isinstance(echoed, Frame) and echoed.opcode is Opcode.TEXT
            assert echoed.data == f"hello {i}".encode()
        for client in clients:
            client.protocol.send_close(1000)
            client.flush()
        for client in clients:
            reply = client.next_event()
            assert isinstance(reply, Frame) and reply.opcode is Opcode.CLOSE
            client.sock.close()
        elapsed = time.monotonic() - started

        assert wait_until(lambda: fd_count(pid) <= fds_before, 15), (
            f"descriptors left open: before {fds_before}, now {fd_count(pid)}"
        )
        fds_after = fd_count(pid)
        per_connection = (rss_open - rss_before) / CONNECTIONS
        print(
            f"\n{CONNECTIONS} connections: server fds before={fds_before} open={fds_open} "
            f"after={fds_after}; RSS before={rss_before} KiB, with all open={rss_open} KiB "
            f"(+{per_connection:.1f} KiB each, compression={COMPRESS}), "
            f"after={rss_kib(pid)} KiB; {elapsed:.2f} s"
        )
        assert fds_open >= fds_before + CONNECTIONS - 5  # all 1000 were open at once
        assert "Traceback" not in server.log()
    finally:
        server.stop()
