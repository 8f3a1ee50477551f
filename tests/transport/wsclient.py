"""Raw-socket helpers for the WebSocket tests: handshakes and frames by hand.

The ``websockets`` sync client covers well-behaved clients; these helpers
send what a well-behaved client never would (bad handshakes, unmasked or
reserved frames, a client that never reads).
"""

from __future__ import annotations

import base64
import os
import socket
import time

from websockets.frames import Close, Frame, Opcode

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake_bytes(
    path: str = "/echo/",
    port: int = 80,
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    headers: dict[str, str | None] | None = None,
) -> bytes:
    """A handshake request; a header set to None in ``headers`` is left out."""
    base: dict[str, str | None] = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers or {})
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in base.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Read an HTTP response head: (status, headers lower-cased, bytes after the head)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        raise ConnectionError("the server closed the connection without an answer")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def raw_handshake(port: int, request: bytes) -> tuple[int, dict[str, str], bytes, socket.socket]:
    """Connect, send ``request``, read the answer; the socket stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(request)
    status, headers, rest = read_response(sock)
    return status, headers, rest, sock


def open_raw(port: int, path: str = "/echo/") -> tuple[socket.socket, bytes]:
    """A completed handshake on a raw socket (no compression offered)."""
    status, _, rest, sock = raw_handshake(port, handshake_bytes(path, port))
    assert status == 101, status
    return sock, rest


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv1: bool = False
) -> bytes:
    """Serialize one client frame by hand (so invalid ones can be built too)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        header = bytes([first, (0x80 if mask else 0) | length])
    elif length < 65536:
        header = bytes([first, (0x80 if mask else 0) | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([first, (0x80 if mask else 0) | 127]) + length.to_bytes(8, "big")
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frame(
    sock: socket.socket, buffer: bytes = b"", timeout: float = 5.0
) -> tuple[Frame, bytes]:
    """Read one (unmasked, uncompressed) server frame; returns it and the rest of the buffer."""
    sock.settimeout(timeout)
    data = buffer

    def need(n: int) -> None:
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed while reading a frame")
            data += chunk

    need(2)
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        need(4)
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        need(10)
        length, offset = int.from_bytes(data[2:10], "big"), 10
    need(offset + length)
    payload = data[offset : offset + length]
    result = Frame(Opcode(data[0] & 0x0F), payload, fin=bool(data[0] & 0x80))
    return result, data[offset + length :]


def close_code(result: Frame) -> int:
    """The code of a close frame (1005 for an empty one)."""
    assert result.opcode is Opcode.CLOSE, result
    return Close.parse(result.data).code


def wait_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Read and discard until the server closes (EOF or reset); True if it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False
