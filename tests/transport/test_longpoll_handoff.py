"""Long-poll sessions survive a graceful restart: real ``wsbridge serve`` processes on Redis.

A client opens on process A; A gets SIGTERM; the client's next requests go to
B (or C) and the session goes on: no close seen, unacked messages delivered
again exactly once with their sequence numbers, later group messages and
sends flowing, the consumer re-connected on the adopting process.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from lp_support import LP, ServeProcess, request, wait_for

from wsbridge.protocol.longpoll import TokenSigner
from wsbridge.testing import LongPollClient

pytestmark = pytest.mark.redis

APP = "lp_gunicorn_app:application"


def serve_env(secret: str | None) -> dict[str, str]:
    env = {
        "LP_REDIS_PREFIX": "wsbridge-handoff-" + secrets.token_hex(4),
        "LP_POLL_TIMEOUT": "10",
        "LP_SESSION_TIMEOUT": "10",
    }
    if secret:
        env["WSBRIDGE_SECRET"] = secret
    return env


def start(count: int, env: dict[str, str]) -> list[ServeProcess]:
    return [ServeProcess(APP, env) for _ in range(count)]


def broadcast(server: ServeProcess, room: str, text: str) -> None:
    assert request(server.port, f"/broadcast?group=chat.{room}&text={text}", method="GET")[0] == 200


def log(server: ServeProcess) -> list[dict]:
    return request(server.port, "/log", method="GET")[1]


@pytest.mark.parametrize(
    "secret", ["shared-secret-0123456789", None], ids=["shared-secret", "per-process-secret"]
)
def test_sessions_move_to_the_other_processes_when_theirs_is_stopped(secret):
    a, b, c = servers = start(3, serve_env(secret))
    try:
        room = "r" + secrets.token_hex(3)
        s1, s2 = LongPollClient(a.url, timeout=10), LongPollClient(a.url, timeout=10)
        watcher = LongPollClient(b.url, timeout=10)  # held by B: not moved at all
        for client in (s1, s2, watcher):
            client.open(f"/ws/chat/{room}/")
        s1.send("before")
        assert s1.receive() == "before" and watcher.receive() == "before"
        # s2's poll answer is "lost": the server sent seq 1, the client never saw it
        lost = s2.request("poll", {"token": s2.token, "ack": 0})
        assert lost == (200, {"messages": [{"seq": 1, "text": "before"}]})
        # s1 has seen everything: its next poll is held by A until A goes away
        held: dict = {}
        parked = threading.Thread(
            target=lambda: held.update(answer=s1.request("poll", s1.session.poll_body()))
        )
        parked.start()
        wait_for(lambda: request(a.port, "/_wsbridge/test-parked", method="GET")[1] == 1)
        old_token = s1.token
        started = time.monotonic()
        assert a.terminate() == 0
        parked.join(10)
        elapsed = time.monotonic() - started
        assert held["answer"] == (200, {"messages": []})  # an empty batch, not a close
        print(f"\nSIGTERM -> held poll answered (empty) and process exited in {elapsed:.2f} s")

        s1.target, s2.target = c.url, b.url  # the next requests reach the other processes
        assert s2.receive() == "before"  # delivered again, once, with its seq
        assert s2.session.seen == 1
        s1.send("after")  # C adopts s1 on this send
        assert s1.session.sent == 2  # client seq went on
        for client in (s1, s2, watcher):
            assert client.receive() == "after"
        assert s1.session.seen == 2 and s2.session.seen == 2  # server seq went on
        broadcast(b, room, "later")
        for client in (s1, s2, watcher):
            assert client.receive() == "later"
            assert client.receive_nothing(0.2)
        assert s1.closed is None and s2.closed is None
        owners = {TokenSigner.parse(t).owner for t in (old_token, s1.token, s2.token)}
        assert len(owners) == 3  # A, then C and B: each answer carried the new token

        # A request still carrying the old token, at a process that does not hold the
        # session, is answered by the process that adopted it (and names the new token).
        status, body = request(b.port, LP + "/poll", {"token": old_token, "ack": 3, "wait": 0})
        assert (status, body) == (200, {"messages": [], "token": s1.token})

        resumed = [
            (event["path"], event["resumed"])
            for server in (b, c)
            for event in log(server)
            if event["event"] == "connect"
        ]
        assert resumed.count((f"/ws/chat/{room}/", True)) == 2
        s1.close()
        s2.close()
    finally:
        for server in servers:
            server.stop()


def test_a_session_survives_a_restart_of_the_only_process():
    env = serve_env("single-secret-0123456789")
    (first,) = start(1, env)
    second = None
    try:
        client = LongPollClient(first.url, timeout=10)
        client.open("/ws/echo/")
        client.send("one")
        assert client.receive() == "one"
        client.send("two")  # echoed but not received before the restart: unacked
        assert first.terminate() == 0
        (second,) = start(1, env)  # the hand-off waits in Redis for the new process
        client.target = second.url
        assert client.receive() == "two"
        client.send("three")
        assert client.receive() == "three"
        assert client.session.seen == 3 and client.closed is None
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
