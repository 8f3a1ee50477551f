"""A flooding WebSocket client, run as its own process by the flood tests (bounded in time).

    python tests/adversarial/flooder.py KIND PORT SECONDS [CONNECTIONS]

KIND is ``pong`` (unsolicited PONG frames), ``ping`` (PINGs, answers read
and dropped) or ``text`` (text messages to the echo path, echoes read and
dropped). A flooder the server closes reconnects and floods again until
SECONDS have passed; it prints ``connections=N bytes=M`` at the end.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import threading
import time

KEY = base64.b64encode(b"0123456789abcdef").decode()
#: The source address (argv[5]); each kind of flood its own, as penalties are per address.
SOURCE = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.2"


def handshake(port: int) -> socket.socket:
    # From an address of its own, as an attacker is: after a close for flooding the
    # server turns that address away for a while (LimitOptions.rate_limit_penalty),
    # not the healthy client's.
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(SOURCE, 0))
    sock.sendall(
        (
            f"GET /ws/echo/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[:80])
    return sock


def masked(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return (
        bytes([0x80 | opcode, 0x80 | len(payload)])
        + key
        + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    )


def drain(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.5)
    try:
        while not stop.is_set():
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return
    finally:
        sock.close()


def flood(kind: str, port: int, until: float, totals: list[int]) -> None:
    opcode = {"pong": 0xA, "ping": 0x9, "text": 0x1}[kind]
    batch = masked(opcode, b"p" * 125) * 500
    while time.monotonic() < until:
        try:
            sock = handshake(port)
        except OSError:
            time.sleep(0.05)
            continue
        totals[0] += 1
        stop = threading.Event()
        # The reader gets its own socket object: a timeout is per object, and the
        # reader's short one must not cut the sender short while the server holds
        # it back (backpressure) -- an attacker stays connected and keeps pushing.
        reader = threading.Thread(target=drain, args=(sock.dup(), stop), daemon=True)
        reader.start()
        try:
            while time.monotonic() < until:
                sock.sendall(batch)
                totals[1] += len(batch)
        except OSError:
            pass  # closed by the server: reconnect
        finally:
            stop.set()
            sock.close()
            reader.join(2)


def main() -> None:
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    connections = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    until = time.monotonic() + seconds
    totals = [0, 0]
    threads = [
        threading.Thread(target=flood, args=(kind, port, until, totals)) for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    print(f"connections={totals[0]} bytes={totals[1]}", flush=True)


if __name__ == "__main__":
    main()
