"""Raw-socket clients and process probes for the attack suite.

Every exchange has a deadline: a server that does not answer (or close) in
time fails the test as a hang. Nothing here trusts the server: answers are
parsed defensively and anything that is not HTTP is reported as such.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.frames import Close

#: What the server may answer to any request in this suite (documented in
#: docs/topics/security.rst "What a client sees"); 505 only for an upgrade that is
#: not HTTP/1.1. ``None``: closed without an answer (an empty request, an idle
#: keep-alive connection).
DOCUMENTED_STATUSES = frozenset(
    {101, 200, 204, 400, 403, 404, 405, 408, 409, 410, 413, 414, 426, 431, 505}
)
#: Close codes a client may receive (RFC 6455 7.4.1; 3000-4999 echo the client's own).
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1013})


#: Session-wide figures: target -> {"examples": n, "seen": Counter}; printed at the end.
FIGURES: dict[str, dict[str, Any]] = defaultdict(lambda: {"examples": 0, "seen": Counter()})
MEASURES: dict[str, Any] = {}


def record(target: str, outcome: Any) -> None:
    """Count one input tried against ``target`` and what the server answered."""
    entry = FIGURES[target]
    entry["examples"] += 1
    entry["seen"][str(outcome)] += 1


class Hang(AssertionError):
    """The server neither answered nor closed within the deadline."""


@dataclass
class Answer:
    """An HTTP answer as read off the socket."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""
    elapsed: float = 0.0


def exchange(
    port: int, request: bytes, *, deadline: float = 5.0, half_close: bool = True
) -> Answer:
    """Send ``request`` on a new connection and read the whole answer (or EOF) within ``deadline``.

    Raises:
        Hang: nothing came back and the connection stayed open past the deadline.
    """
    started = time.monotonic()
    end = started + deadline
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        try:
            sock.sendall(request)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused and closed while we were sending: read what it said
        data = b""
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise Hang(f"no complete answer within {deadline}s; got {data[:200]!r}")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise Hang(f"no complete answer within {deadline}s; got {data[:200]!r}") from None
            except OSError:
                break  # reset: whatever arrived before counts
            if not chunk:
                break
            data += chunk
            answer = parse_answer(data)
            if answer is not None and _complete(answer, data):
                break
    answer = parse_answer(data) or Answer(None, raw=data)
    answer.raw = data
    answer.elapsed = time.monotonic() - started
    return answer


def parse_answer(data: bytes) -> Answer | None:
    """Parse an HTTP/1.x answer head; None while it is incomplete or not HTTP."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(parts[1]), headers, rest)


def _complete(answer: Answer, data: bytes) -> bool:
    if answer.status == 101:
        return True
    length = answer.headers.get("content-length")
    if length is not None and length.isdigit():
        return len(answer.body) >= int(length)
    return False


def http_request(
    method: str,
    path: str,
    port: int,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    *,
    content_length: bool = True,
) -> bytes:
    """A request with ``Connection: close`` (and Content-Length unless told not to)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


# -- WebSocket frames ---------------------------------------------------------------------


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    key: bytes = b"\x01\x02\x03\x04",
) -> bytes:
    """One client frame built by hand (so invalid ones can be built too)."""
    first = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        header = bytes([first, bit | length])
    elif length < 65536:
        header = bytes([first, bit | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([first, bit | 127]) + length.to_bytes(8, "big")
    if not mask:
        return header + payload
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_server_frames(
    sock: socket.socket, buffer: bytes, deadline: float
) -> tuple[list, int | None]:
    """Read server frames until a close frame or EOF; returns ``(frames, close code)``.

    ``frames`` are ``(opcode, payload)``; the close code is None when the
    connection ended without a close frame.

    Raises:
        Hang: neither a close frame nor EOF within ``deadline`` seconds.
    """
    end = time.monotonic() + deadline
    data = buffer
    frames: list[tuple[int, bytes]] = []
    while True:
        parsed = _take_frame(data)
        if parsed is not None:
            opcode, payload, data = parsed
            frames.append((opcode, payload))
            if opcode == 8:
                code = Close.parse(payload).code if payload else 1005
                return frames, code
            continue
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise Hang(f"no close frame or EOF within {deadline}s after {len(frames)} frames")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise Hang(f"no close frame or EOF within {deadline}s") from None
        except OSError:
            return frames, None
        if not chunk:
            return frames, None
        data += chunk


def _take_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    if len(data) < 2:
        return None
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, offset = int.from_bytes(data[2:10], "big"), 10
    if len(data) < offset + length:
        return None
    return data[0] & 0x0F, data[offset : offset + length], data[offset + length :]


# -- the server process ------------------------------------------------------------------


def fd_count(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")


def wait_fds_at_most(pid: int, limit: int, timeout: float) -> int:
    """Wait until ``pid`` holds at most ``limit`` descriptors; returns the last count."""
    end = time.monotonic() + timeout
    count = fd_count(pid)
    while count > limit and time.monotonic() < end:
        time.sleep(0.05)
        count = fd_count(pid)
    return count


@dataclass
class Baseline:
    """FDs and RSS of the server before an attack, to compare with after it."""

    pid: int
    fds: int
    rss: int

    @classmethod
    def take(cls, pid: int) -> Baseline:
        return cls(pid, fd_count(pid), rss_bytes(pid))

    def check(self, *, fd_slack: int = 8, rss_slack: int = 64 << 20, timeout: float = 10.0) -> dict:
        """Assert FDs and RSS came back near the baseline; returns the figures."""
        fds = wait_fds_at_most(self.pid, self.fds + fd_slack, timeout)
        rss = rss_bytes(self.pid)
        figures = {
            "fds_before": self.fds,
            "fds_after": fds,
            "rss_before": self.rss,
            "rss_after": rss,
        }
        assert fds <= self.fds + fd_slack, figures
        assert rss <= self.rss + rss_slack, figures
        return figures


def log_since(path: Any, offset: int) -> str:
    """What the server wrote to its log after byte ``offset``."""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


#: Tracebacks the *site's own app* logs for its own 4xx answers (not wsbridge's doing):
#: Django logs ``DisallowedHost`` (an invalid ``Host`` on an ordinary page, answered 400)
#: with its traceback on ``django.security``; Django's docs suggest silencing it.
SITE_OWN_TRACEBACKS = ("django.core.exceptions.DisallowedHost:",)


def tracebacks(text: str) -> list[str]:
    """Every traceback in ``text``, each ending with its exception line."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            found.append("\n".join(lines[i : j + 1]))
    return found


def assert_clean_log(text: str) -> None:
    """No traceback and no 5xx answer: every bad input got a clean answer."""
    ours = [
        tb for tb in tracebacks(text) if not tb.splitlines()[-1].startswith(SITE_OWN_TRACEBACKS)
    ]
    assert not ours, ours[0][-4000:]
    assert "Internal Server Error" not in text, text[-4000:]
