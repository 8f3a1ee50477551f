"""Slow peers: half-sent request heads, half-sent bodies, idle keep-alive connections.

Each holds a greenlet and a descriptor of the server for as long as it is
allowed to; the timeouts (1 s head, 2 s keep-alive on these servers, 1 s
long-poll body on the plain site) bound that, and the FDs come back.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.adversarial.harness import MEASURES, fd_count, parse_answer, wait_fds_at_most

CONNECTIONS = 500


def _open_many(port: int, payload: bytes, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            sock.sendall(payload)
        socks.append(sock)
    return socks


class _PeakFds:
    """The most descriptors ``pid`` held while the block ran, sampled every 20 ms.

    Read once after opening the sockets, a loaded machine under-reports: the
    server may not have accepted the last ones yet while the first ones have
    had their 408 already.
    """

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, fd_count(pid)
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, fd_count(self.pid))

    def __enter__(self) -> _PeakFds:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join(5)
        self.peak = max(self.peak, fd_count(self.pid))


def _answers(socks: list[socket.socket], deadline: float) -> list[bytes]:
    answers = []
    end = time.monotonic() + deadline
    for sock in socks:
        data = b""
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        answers.append(data)
        sock.close()
    return answers


def test_slowloris_500_half_sent_heads_are_dropped_and_fds_return(site, watched):
    before = fd_count(site.pid)
    started = time.monotonic()
    with _PeakFds(site.pid) as fds:
        socks = _open_many(site.port, b"GET / HT", CONNECTIONS)
        answers = _answers(socks, deadline=10.0)
    peak = fds.peak
    elapsed = time.monotonic() - started
    after = wait_fds_at_most(site.pid, before + 8, timeout=10)
    statuses = {(parse_answer(a) or type("x", (), {"status": None})).status for a in answers}
    MEASURES.setdefault("slowloris", {})[site.name] = {
        "connections": CONNECTIONS,
        "fds_before": before,
        "fds_peak": peak,
        "fds_after": after,
        "seconds_to_drop_all": round(elapsed, 2),
        "statuses": sorted(map(str, statuses)),
    }
    # They were really held (a loaded machine may take a second to open all 500, by
    # which time the first ones have had their 408 already).
    assert peak >= before + CONNECTIONS // 5, peak
    assert statuses == {408}, statuses
    assert after <= before + 8
    assert elapsed < 8


def test_a_silent_connection_gets_408_after_the_header_timeout(site, watched):
    started = time.monotonic()
    (answer,) = _answers(_open_many(site.port, b"", 1), deadline=6.0)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.8 < time.monotonic() - started < 5


def test_an_idle_keepalive_connection_is_closed_after_the_keepalive_timeout(site, watched):
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=10)
    with sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{site.port}\r\n\r\n".encode())
        data = b""
        while parse_answer(data) is None or len(parse_answer(data).body) < int(
            parse_answer(data).headers.get("content-length", "0")
        ):
            data += sock.recv(65536)
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server, nothing more said
        idle = time.monotonic() - started
    assert 1.5 < idle < 6, idle


def test_a_half_sent_longpoll_body_gets_408_and_the_connection_closes(plain_site, watched):
    head = (
        f"POST /_wsbridge/lp/open HTTP/1.1\r\nHost: 127.0.0.1:{plain_site.port}\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    before = fd_count(plain_site.pid)
    socks = _open_many(plain_site.port, head + b'{"path": "', 50)
    answers = _answers(socks, deadline=8.0)
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
    assert all(b"connection: close" in a.lower() for a in answers), answers[:1]
    assert wait_fds_at_most(plain_site.pid, before + 8, timeout=10) <= before + 8
