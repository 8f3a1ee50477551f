"""No sticky sessions: two server processes on one Redis, requests spread between them."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from lp_support import LP, Client, Server, wait_for
from lp_support import request as http_request

pytestmark = pytest.mark.redis

SESSION_TIMEOUT = 4


@pytest.fixture(scope="module", params=["shared-secret", "per-process-secret"])
def pair(request):
    prefix = "wsbridge-lp-test-" + secrets.token_hex(4)
    # A session timeout of a few seconds: short enough for the keep-alive test, long
    # enough that a session left silent between two steps of a test on a loaded
    # machine does not expire under it (the cause of an old flaky failure).
    args = [
        "--layer",
        "redis",
        "--redis-prefix",
        prefix,
        "--poll-timeout",
        "1.5",
        "--session-timeout",
        str(SESSION_TIMEOUT),
    ]
    if request.param == "shared-secret":
        args += ["--secret", "shared-secret-0123456789"]
    servers = [Server(*args), Server(*args)]
    yield servers
    for server in servers:
        server.stop()


def test_polls_and_sends_reach_the_session_through_either_process(pair):
    a, b = pair
    client = Client(a.port, "/ws/echo/")
    got = []
    for i in range(6):
        port = (a, b)[i % 2].port
        client.send(f"m{i}", port=port)
        got += client.texts_until(1, port=(b, a)[i % 2].port)
    assert got == [f"m{i}" for i in range(6)]


def test_a_lost_response_from_the_other_process_is_delivered_again(pair):
    a, b = pair
    client = Client(a.port, "/ws/echo/")
    client.send("x", "y", port=b.port)
    wait_for(lambda: client.call("poll", b.port, ack=0)[1]["messages"])
    status, body = client.call("poll", a.port, ack=0)  # that answer was "lost"
    assert [m["text"] for m in body["messages"]] == ["x", "y"]
    assert client.texts_until(2, port=b.port) == ["x", "y"]
    # a retried send through the other process is applied once
    client.call("send", a.port, messages=[{"seq": 3, "text": "z"}])
    client.call("send", b.port, messages=[{"seq": 3, "text": "z"}])
    client.sent = 3
    client.send("w", port=a.port)
    assert client.texts_until(2, port=b.port) == ["z", "w"]


def test_a_group_spans_sessions_held_by_both_processes(pair):
    a, b = pair
    room = "/ws/chat/r" + secrets.token_hex(3) + "/"
    alice = Client(a.port, room)
    bob = Client(b.port, room)
    alice.send("hi from alice", port=b.port)
    assert bob.texts_until(1, port=a.port) == ["hi from alice"]
    assert alice.texts_until(1, port=a.port) == ["hi from alice"]


def test_closed_and_forged_tokens_through_the_other_process(pair):
    a, b = pair
    client = Client(a.port, "/ws/echo/")
    sid, owner, mac = client.token.split(".")
    forged = ".".join((sid, owner, "A" * len(mac)))
    assert http_request(b.port, LP + "/poll", {"token": forged, "ack": 0})[0] == 403
    assert client.call("close", b.port, code=1000) == (200, {"closed": True})
    assert client.call("poll", b.port, ack=0)[0] == 410


def test_a_session_kept_alive_only_through_the_other_process_does_not_expire(pair):
    a, b = pair
    client = Client(a.port, "/ws/echo/")
    started = time.monotonic()
    for i in range(6):  # empty polls of 1.5 s through b only, until past the timeout
        client.send(f"k{i}", port=b.port)
        assert client.texts_until(1, port=b.port) == [f"k{i}"]
        assert client.poll(port=b.port) == []
        if time.monotonic() - started > SESSION_TIMEOUT + 0.5:
            break
    assert time.monotonic() - started > SESSION_TIMEOUT + 0.5
    status, _ = client.call("poll", a.port, ack=client.seen)
    assert status == 200


def test_gunicorn_gevent_with_two_workers_needs_no_sticky_sessions(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from wsbridge.protocol.longpoll import TokenSigner

    with socket.socket() as probe:  # gunicorn needs a port number up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    here = Path(__file__).parent
    env = {
        **os.environ,
        "LP_REDIS_PREFIX": "wsbridge-gu-" + secrets.token_hex(4),
        "WSBRIDGE_SECRET": "gunicorn-secret-0123456789",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "2",
            "--chdir",
            str(here),
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "2",
            "lp_gunicorn_app:application",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.log", "w"),
    )
    try:
        wait_for(lambda: _answers(port), timeout=20)
        # open sessions on fresh connections, a few at a time, until both workers own one
        # (the second worker may still be booting; the kernel picks who accepts)
        owners: dict[str, Client] = {}
        end = time.monotonic() + 30
        with ThreadPoolExecutor(8) as pool:
            while len(owners) < 2 and time.monotonic() < end:
                for client in pool.map(lambda _: Client(port, "/ws/echo/"), range(16)):
                    owners.setdefault(TokenSigner.parse(client.token).owner, client)
        assert len(owners) == 2, "the second gunicorn worker never took a connection"
        for client in owners.values():  # every request on a new connection: either worker
            for i in range(8):
                client.send(f"g{i}")
                assert client.texts_until(1) == [f"g{i}"]
    finally:
        proc.terminate()
        proc.wait(15)


def _answers(port: int) -> bool:
    try:
        return http_request(port, "/pid", method="GET", timeout=2)[0] == 200
    except OSError:
        return False
