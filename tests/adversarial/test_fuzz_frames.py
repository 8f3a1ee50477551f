"""Fuzzing WebSocket frame sequences: every connection ends with a documented close code."""

from __future__ import annotations

from hypothesis import given

from tests.adversarial.harness import SERVER_CLOSE_CODES, client_frame, read_server_frames, record
from tests.adversarial.strategies import frame_sequence
from tests.transport.wsclient import handshake_bytes, read_response


def _open(site):
    import socket

    sock = socket.create_connection(("127.0.0.1", site.port), timeout=5)
    headers = {"Origin": site.origin}
    if site.cookie:
        headers["Cookie"] = site.cookie
    sock.sendall(handshake_bytes("/ws/echo/", site.port, headers=headers))
    status, _, rest = read_response(sock)
    assert status == 101, status
    return sock, rest


def test_every_frame_sequence_ends_with_a_documented_close_code(site, watched):
    @given(frames=frame_sequence())
    def attack(frames) -> None:
        sock, rest = _open(site)
        with sock:
            try:
                for spec in frames:
                    sock.sendall(client_frame(**spec))
                sock.sendall(client_frame(8, (1000).to_bytes(2, "big")))
            except OSError:
                pass  # the server closed first: its close frame is still readable
            received, code = read_server_frames(sock, rest, deadline=5.0)
        record(f"{site.name}:frames", code)
        # The server's own codes, or the client's (3000-4999) echoed; None: it dropped
        # the connection after its close frame was lost to our unread input (RST); 1005
        # (an empty close frame): the echo of a client's close frame that had no code.
        empty_close = any(spec["opcode"] == 8 and not spec["payload"] for spec in frames)
        assert (
            code is None
            or code in SERVER_CLOSE_CODES
            or 3000 <= code <= 4999
            or (code == 1005 and empty_close)
        ), (frames, code)
        for opcode, _ in received[:-1]:
            assert opcode in (1, 2, 9, 10), received

    attack()
