"""A client that stops reading, per group policy: close (1008), drop-oldest, coalesce."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from tests.conftest import start_wsbridge_serve
from tests.transport.wsclient import frame, handshake_bytes, read_frame, read_response

N, SIZE = 600, 16 * 1024  # 9.6 MB: far past the 256 KiB outbound limit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = start_wsbridge_serve(
        "tests.identity.policy_app:application", tmp_path_factory.mktemp("policies")
    )
    yield served
    served.stop()


def stalled_client(server, group: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(handshake_bytes(f"/ws/ticks/{group}/", server.port))
    assert read_response(sock)[0] == 101
    return sock


def publish(server, group: str) -> dict:
    url = server.url(f"/?group={group}&n={N}&size={SIZE}")
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def drain(sock: socket.socket, quiet: float = 1.0) -> tuple[list, int | None]:
    """Read every frame until ``quiet`` s pass without one; (texts, close code or None)."""
    texts, code, rest = [], None, b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            got, rest = read_frame(sock, rest, timeout=quiet)
        except TimeoutError:
            break
        except (ConnectionError, EOFError, OSError):
            code = code or 1006
            break
        if got.opcode == 0x8:
            code = int.from_bytes(got.data[:2], "big") if len(got.data) >= 2 else 1005
            break
        texts.append(got.data.decode())
    return texts, code


def test_default_policy_closes_a_client_that_does_not_read(server):
    sock = stalled_client(server, "plain.a")
    publish(server, "plain.a")
    _, code = drain(sock)
    assert code in (1013, 1006)  # 1013 frame, or the RST of the aborted socket


def test_coalesce_keeps_only_the_latest_per_key_and_the_connection(server):
    sock = stalled_client(server, "ticker.a")
    publish(server, "ticker.a")
    texts, code = drain(sock)
    assert code is None, "the connection was closed"
    ticks = [json.loads(t) for t in texts]
    assert len(ticks) < N  # coalesced
    last = {}
    for tick in ticks:
        last[tick["symbol"]] = tick["seq"]
    assert last == {f"s{i}": N - 4 + i for i in range(4)}  # every symbol's final value
    seqs = [t["seq"] for t in ticks]
    assert seqs == sorted(seqs)
    sock.sendall(frame(0x1, b"still there?"))
    assert read_frame(sock, timeout=5)[0].data == b"echo:still there?"


def test_drop_oldest_sends_a_gap_notice_and_the_newest_messages(server):
    sock = stalled_client(server, "feed.a")
    publish(server, "feed.a")
    texts, code = drain(sock)
    assert code is None
    gaps = [json.loads(t)["wsbridge.gap"] for t in texts if t.startswith('{"wsbridge.gap"')]
    ticks = [json.loads(t) for t in texts if not t.startswith('{"wsbridge.gap"')]
    assert gaps and all(g["group"] == "feed.a" for g in gaps)
    assert sum(g["dropped"] for g in gaps) + len(ticks) == N  # every message accounted for
    assert ticks[-1]["seq"] == N - 1
    assert [t["seq"] for t in ticks] == sorted(t["seq"] for t in ticks)


def test_drop_oldest_with_history_replays_what_it_let_go_in_order_exactly_once(server):
    sock = stalled_client(server, "hfeed.a")
    publish(server, "hfeed.a")  # 9.6 MB to a client whose socket takes 4 KiB
    texts, code = drain(sock)
    assert code is None
    assert not [t for t in texts if t.startswith('{"wsbridge.gap"')]  # nothing was lost
    assert [json.loads(t)["seq"] for t in texts] == list(range(N))
    sock.sendall(frame(0x1, b"still there?"))
    assert read_frame(sock, timeout=5)[0].data == b"echo:still there?"


def test_drop_oldest_past_the_history_tells_the_gap_as_not_recovered(server):
    sock = stalled_client(server, "sfeed.a")
    publish(server, "sfeed.a")  # the history keeps 20 of the 600
    texts, code = drain(sock)
    assert code is None
    gaps = [json.loads(t)["wsbridge.gap"] for t in texts if t.startswith('{"wsbridge.gap"')]
    ticks = [json.loads(t)["seq"] for t in texts if not t.startswith('{"wsbridge.gap"')]
    assert gaps and all(g["recovered"] is False and g["group"] == "sfeed.a" for g in gaps)
    assert ticks == sorted(set(ticks)) and ticks[-1] == N - 1  # in order, none twice
    assert sum(g["dropped"] for g in gaps) + len(ticks) == N  # every message accounted for


def test_coalesce_on_long_poll_keeps_a_session_that_does_not_poll(server):
    from tests.identity.test_identity_longpoll_sse import post

    status, opened = post(server.port, "/_wsbridge/lp/open", {"path": "/ws/ticks/ticker.lp/"}, "")
    assert status == 200, opened
    publish(server, "ticker.lp")  # 9.6 MB: more than the session's 4 MiB buffer
    ticks, ack = [], 0
    for _ in range(200):
        status, body = post(
            server.port,
            "/_wsbridge/lp/poll",
            {"token": opened["token"], "ack": ack, "wait": 0.5},
            "",
        )
        assert status == 200, body
        frames = body["messages"]
        if not frames:
            break
        assert not any("close" in f for f in frames), "the session was closed"
        ack = frames[-1]["seq"]
        ticks += [json.loads(f["text"]) for f in frames]
    assert len(ticks) < N
    last = {}
    for tick in ticks:
        last[tick["symbol"]] = tick["seq"]
    assert last == {f"s{i}": N - 4 + i for i in range(4)}
