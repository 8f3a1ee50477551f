"""Messages and close codes over real sockets: sizes, fragments, bad frames.

Bad input closes only the connection that sent it, with the right code;
every other connection goes on (checked at the end of each bad-input test).
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.transport.wsclient import close_code, frame, open_raw, read_frame, wait_closed

MiB = 1024 * 1024


def status_of(server, key: str, timeout: float = 5.0) -> str:
    """The close code the consumer for ``?key`` saw, as recorded by ws_apps."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(server.url(f"/status/{key}")) as answer:
            value = answer.read().decode()
        if value != "None" or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.mark.parametrize("compression", ["deflate", None])
def test_large_messages_are_not_corrupted(ws_server, compression):
    payload = os.urandom(MiB - 16 * 1024)  # deflate may grow random data a little
    with connect(ws_server.ws_url("/echo/"), compression=compression, max_size=2 * MiB) as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
        text = "é€" * 100_000
        ws.send(text)
        assert ws.recv(timeout=10) == text


def test_fragmented_message_is_reassembled(ws_server):
    with connect(ws_server.ws_url("/echo/")) as ws:
        ws.send(["frag", "ment", "é" * 10])
        assert ws.recv(timeout=5) == "fragmentéééééééééé"
        ws.send([b"\x00" * 10, b"\x01" * 10])
        assert ws.recv(timeout=5) == b"\x00" * 10 + b"\x01" * 10


def test_client_ping_gets_a_pong(ws_server):
    with connect(ws_server.ws_url("/echo/")) as ws:
        assert ws.ping(b"abc").wait(5)


def test_too_big_message_closes_with_1009(ws_server):
    with connect(ws_server.ws_url("/echo/?too-big"), compression=None, max_size=None) as ws:
        ws.send(b"x" * (MiB + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1009
    assert status_of(ws_server, "too-big") == "1009"


def test_size_limit_applies_after_decompression(ws_server):
    # 2 MiB of zeros compresses to a few KiB on the wire, yet is refused.
    with connect(ws_server.ws_url("/echo/?bomb"), max_size=None) as ws:
        assert ws.protocol.extensions, "compression should be negotiated"
        ws.send(b"\x00" * (2 * MiB))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1009


def test_fragments_adding_up_past_the_limit_close_with_1009(tight_server):
    with connect(tight_server.ws_url("/echo/"), max_size=None) as ws:
        ws.send([b"x" * 40_000, b"y" * 40_000])  # tight limit: 64 KiB
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1009


def test_invalid_utf8_closes_with_1007(ws_server):
    sock, rest = open_raw(ws_server.port)
    with sock:
        sock.sendall(frame(0x1, b"ok \xff\xfe"))
        reply, _ = read_frame(sock, rest)
        assert close_code(reply) == 1007
        assert wait_closed(sock)


def test_invalid_utf8_split_across_fragments_closes_with_1007(ws_server):
    sock, rest = open_raw(ws_server.port)
    with sock:
        sock.sendall(frame(0x1, b"caf\xc3", fin=False))  # valid so far (incomplete é)
        sock.sendall(frame(0x0, b"\x28", fin=True))  # \xc3\x28 is invalid
        reply, _ = read_frame(sock, rest)
        assert close_code(reply) == 1007


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(frame(0x3, b"reserved opcode"), id="reserved-opcode"),
        pytest.param(frame(0x1, b"unmasked", mask=False), id="unmasked"),
        pytest.param(frame(0x1, b"rsv1 without extension", rsv1=True), id="rsv1"),
        pytest.param(frame(0x0, b"continuation first"), id="lone-continuation"),
        pytest.param(frame(0x9, b"p" * 126), id="control-frame-too-long"),
        pytest.param(frame(0x9, b"ping", fin=False), id="fragmented-control-frame"),
    ],
)
def test_protocol_errors_close_with_1002_and_spare_other_connections(ws_server, bad):
    with connect(ws_server.ws_url("/echo/")) as bystander:
        sock, rest = open_raw(ws_server.port)
        with sock:
            sock.sendall(bad)
            reply, _ = read_frame(sock, rest)
            assert close_code(reply) == 1002
            assert wait_closed(sock)
        bystander.send("still here")
        assert bystander.recv(timeout=5) == "still here"


def test_closing_handshake_echoes_the_client_code(ws_server):
    sock, rest = open_raw(ws_server.port, "/echo/?client-close")
    with sock:
        sock.sendall(frame(0x8, (4001).to_bytes(2, "big") + b"bye"))
        reply, _ = read_frame(sock, rest)
        assert close_code(reply) == 4001
        assert wait_closed(sock)  # the server closes the TCP connection first
    assert status_of(ws_server, "client-close") == "4001"


def test_server_initiated_close_uses_the_consumer_code(ws_server):
    with connect(ws_server.ws_url("/echo/?server-close")) as ws:
        ws.send("close:4002")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4002
    assert status_of(ws_server, "server-close") == "4002"


def test_close_right_after_accept_still_completes_both_handshakes(ws_server):
    with connect(ws_server.ws_url("/accept-close/?accept-close")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4003
    assert status_of(ws_server, "accept-close") == "4003"


def test_abrupt_disconnect_is_reported_as_1006_and_logged_quietly(ws_server):
    mark = len(ws_server.log())
    sock, _ = open_raw(ws_server.port, "/echo/?abrupt")
    sock.close()
    assert status_of(ws_server, "abrupt") == "1006"
    assert ws_server.log()[mark:] == ""  # DEBUG only: nothing at the default level


def test_garbage_after_the_handshake_spares_other_connections(ws_server):
    mark = len(ws_server.log())
    with connect(ws_server.ws_url("/echo/")) as bystander:
        for _ in range(5):
            sock, _ = open_raw(ws_server.port)
            with sock:
                sock.sendall(os.urandom(4096))
                wait_closed(sock, timeout=2)
        bystander.send("fine")
        assert bystander.recv(timeout=5) == "fine"
    assert "Traceback" not in ws_server.log()[mark:]


# -- frames written by wsbridge itself (no extension negotiated) --------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_direct_frame_header_matches_websockets_serialization(size):
    from websockets.frames import Frame, Opcode

    from wsbridge.transport.wsframes import OP_BINARY, OP_TEXT, frame_header

    payload = b"a" * size
    for first, opcode in ((OP_TEXT, Opcode.TEXT), (OP_BINARY, Opcode.BINARY)):
        expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
        assert frame_header(first, size) + payload == expected


def _read_raw_frame(sock, buffer: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, payload, rest): one server frame with its header bytes as sent."""
    sock.settimeout(5)

    def need(n: int) -> None:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            assert chunk, "connection closed while reading a frame"
            buffer += chunk

    need(2)
    assert not buffer[1] & 0x80, "server frames are never masked (RFC 6455 5.1)"
    length, size = buffer[1] & 0x7F, 2
    if length == 126:
        size = 4
    elif length == 127:
        size = 10
    need(size)
    if size > 2:
        length = int.from_bytes(buffer[2:size], "big")
    need(size + length)
    return buffer[:size], buffer[size : size + length], buffer[size + length :]


def test_server_frames_are_fin_unmasked_with_the_shortest_length_form(ws_server):
    sock, buffer = open_raw(ws_server.port)
    with sock:
        for size in (0, 125, 126, 65535, 65536, 70_000):
            text = "é" * (size // 2) + "x" * (size % 2)
            sock.sendall(frame(0x1, text.encode()))
            header, payload, buffer = _read_raw_frame(sock, buffer)
            assert header[0] == 0x81  # FIN, no RSV bit, text
            assert len(header) == (2 if size < 126 else 4 if size < 65536 else 10)
            assert payload.decode() == text
            sock.sendall(frame(0x2, bytes(range(256)) * (size // 256)))
            header, payload, buffer = _read_raw_frame(sock, buffer)
            assert header[0] == 0x82 and payload == bytes(range(256)) * (size // 256)
        sock.sendall(frame(0x8, (1000).to_bytes(2, "big")))
        result, buffer = read_frame(sock, buffer)
        assert close_code(result) == 1000  # the closing handshake still works


def test_compressed_connections_are_still_framed_by_websockets(ws_server):
    from tests.transport.wsclient import handshake_bytes, raw_handshake

    request = handshake_bytes(
        "/echo/", ws_server.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}
    )
    status, headers, buffer, sock = raw_handshake(ws_server.port, request)
    assert status == 101 and "permessage-deflate" in headers["sec-websocket-extensions"]
    with sock:
        text = "compress me " * 1000
        sock.sendall(frame(0x1, text.encode()))
        header, payload, buffer = _read_raw_frame(sock, buffer)
        assert header[0] == 0x81 | 0x40  # RSV1: a compressed message (RFC 7692)
        assert len(payload) < len(text) // 10


def test_a_burst_to_a_client_that_reads_late_arrives_complete_and_in_order(ws_server):
    """The kernel takes part of the burst: the rest goes through the writer, in order."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", ws_server.port))
    from tests.transport.wsclient import handshake_bytes, read_response

    sock.sendall(handshake_bytes("/echo/", ws_server.port))
    status, _, buffer = read_response(sock)
    assert status == 101
    count, filler = 300, "f" * 6000  # about 1.8 MB: past the socket buffers, within the bound
    with sock:
        for i in range(count):  # nothing read meanwhile: the server's writes back up
            sock.sendall(frame(0x1, f"{i}:{filler}".encode()))
        for i in range(count):
            _, payload, buffer = _read_raw_frame(sock, buffer)
            assert payload.decode() == f"{i}:{filler}"


def test_what_the_kernel_does_not_take_goes_to_the_writer_in_order():
    """In process: a small send buffer and a peer that reads late force partial writes."""
    import gevent
    import gevent.socket

    from wsbridge.transport.websocket import WebSocketOptions, WebSocketTransport

    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    scope = {"client": ["127.0.0.1", 1], "path": "/"}
    transport = WebSocketTransport(server, scope, WebSocketOptions(), upgraded=True)
    assert transport.out.raw_send is not None, "a plain gevent socket gets direct writes"
    messages = [f"{i}:".encode() + bytes([65 + i % 26]) * 20_000 for i in range(40)]
    with listener, client, server:
        for i, message in enumerate(messages):
            if i % 2:
                transport.send_message(None, message)
            else:
                transport.send_message(message.decode(), None)
        assert transport.out.writer is not None, "the kernel should not have taken 800 KB"
        assert transport.out.pending_bytes > 0
        buffer = b""
        for i, message in enumerate(messages):
            header, payload, buffer = _read_raw_frame(client, buffer)
            assert header[0] == (0x82 if i % 2 else 0x81)
            assert payload == message
        gevent.sleep(0)
        assert transport.out.writer is None and transport.out.pending_bytes == 0
        assert transport.bytes_sent == sum(len(m) + 4 for m in messages)


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        ({"status": 403, "code": 1000}, 1008),  # connect() did not decide, or close()
        ({"status": 403, "code": 4001}, 4001),  # the consumer's own code
        ({"status": 500, "code": 1011, "crashed": True}, 1011),
    ],
)
def test_a_refusal_after_the_servers_own_101_is_a_close_frame(refusal, code):
    """gevent-websocket answered the handshake itself: a refusal can only be a close frame."""
    import gevent.socket

    from wsbridge.protocol.connection import Refused
    from wsbridge.transport.websocket import WebSocketOptions, WebSocketTransport

    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    scope = {"client": ["127.0.0.1", 1], "path": "/"}
    transport = WebSocketTransport(server, scope, WebSocketOptions(), upgraded=True)
    with listener, client, server:
        transport.consumer_output(Refused(**refusal))
        header, payload, _ = _read_raw_frame(client, b"")
        assert header[0] == 0x88  # FIN + CLOSE
        assert int.from_bytes(payload[:2], "big") == code
