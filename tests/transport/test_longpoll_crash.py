"""Long-poll sessions survive a crash: ``wsbridge serve`` processes on Redis, one killed with -9.

A process killed with -9 writes no hand-off; its sessions live on in their
checkpoints in the layer (``transport/longpoll/checkpoint.py``). The next
request reaching a survivor is answered 503 (retry) while the dead
process's lease runs, then the survivor adopts the session: unacked
messages delivered again once with their sequence numbers, the client's
sends go on, the consumer connects again with ``scope["resumed"]``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from lp_support import HERE, LP, ROOT, ServeProcess, request, wait_for

from tests.conftest import free_port
from wsbridge.protocol.longpoll import TokenSigner
from wsbridge.testing import LongPollClient

pytestmark = pytest.mark.redis

APP = "lp_gunicorn_app:application"
#: The processes' lease: a killed process is known dead at most this long after.
LEASE = 1.5


def serve_env(secret: str | None, **extra: str) -> dict[str, str]:
    env = {
        "LP_REDIS_PREFIX": "wsbridge-crash-" + secrets.token_hex(4),
        "LP_POLL_TIMEOUT": "2",
        "LP_SESSION_TIMEOUT": "20",
        "LP_LEASE": str(LEASE),
        **extra,
    }
    if secret:
        env["WSBRIDGE_SECRET"] = secret
    return env


def log(server: ServeProcess) -> list[dict]:
    return request(server.port, "/log", method="GET")[1]


@pytest.mark.parametrize(
    "secret", ["shared-secret-0123456789", None], ids=["shared-secret", "per-process-secret"]
)
def test_the_sessions_of_a_killed_process_are_adopted_with_nothing_lost_or_doubled(secret):
    env = serve_env(secret)
    a, b = servers = [ServeProcess(APP, env), ServeProcess(APP, env)]
    try:
        room = "r" + secrets.token_hex(3)
        s1, s2 = LongPollClient(a.url, timeout=30), LongPollClient(a.url, timeout=30)
        watcher = LongPollClient(b.url, timeout=30)
        for client in (s1, s2, watcher):
            client.open(f"/ws/chat/{room}/")
        s1.send("before")
        assert s1.receive() == "before" and watcher.receive() == "before"
        # s2's poll answer is "lost": the server sent seq 1, the client never saw it.
        lost = s2.request("poll", {"token": s2.token, "ack": 0})
        assert lost == (200, {"messages": [{"seq": 1, "text": "before"}]})
        old_token = s1.token

        a.stop()  # SIGKILL: no hand-off, no goodbye to the peers
        killed = time.monotonic()
        s1.target, s2.target = b.url, b.url
        # B answers 503 while A's lease runs, then adopts: "before" again, once, as seq 1.
        assert s2.receive() == "before"
        adopted_after = time.monotonic() - killed
        assert s2.session.seen == 1
        s1.send("after")  # client seq goes on from what A had applied
        assert s1.session.sent == 2
        for client in (s1, s2, watcher):
            assert client.receive() == "after"
        assert s1.session.seen == 2 and s2.session.seen == 2
        for client in (s1, s2, watcher):
            assert client.receive_nothing(0.3)  # A's membership is gone: no copy via A
        assert s1.closed is None and s2.closed is None
        assert TokenSigner.parse(s1.token).owner != TokenSigner.parse(old_token).owner
        print(f"\nkill -9 -> session adopted by the survivor after {adopted_after:.2f} s")
        assert adopted_after < LEASE + 5  # the lease, a check per second, the client backoff

        # An old token at the survivor is answered for the session B now holds.
        status, body = request(b.port, LP + "/poll", {"token": old_token, "ack": 2, "wait": 0})
        assert (status, body) == (200, {"messages": [], "token": s1.token})
        resumed = [(e["path"], e["resumed"]) for e in log(b) if e["event"] == "connect"]
        assert resumed.count((f"/ws/chat/{room}/", True)) == 2
        s1.close()
        s2.close()
    finally:
        for server in servers:
            server.stop()


def test_an_adopted_session_recovers_what_its_history_group_sent_while_no_one_held_it():
    """The group's messages between the crash and the adoption come from the history.

    Once the session is adopted its consumer joins the group again, but what
    the group sent meanwhile went to the dead process. The checkpoint carries
    the position of the last frame sent, so the adopter replays the rest:
    in order, each once. (It carried the first open's positions before the
    fix, which lost everything in between: examples/chat's kill -9 test.)
    """
    env = serve_env("shared-secret-0123456789", LP_HISTORY="chat.*")
    a, b = servers = [ServeProcess(APP, env), ServeProcess(APP, env)]

    def texts(client, count):
        got = [json.loads(client.receive()) for _ in range(count)]
        return [f.get("text", "recovered" if f["wsb"].get("recovered") else "lost") for f in got]

    try:
        room = "r" + secrets.token_hex(3)
        reader = LongPollClient(a.url, timeout=30)
        reader.open(f"/ws/chat/{room}/?wsbridge_recover=%7B%7D")  # stamped frames, as wsbridge.js
        sender = LongPollClient(b.url, timeout=30)
        sender.open(f"/ws/chat/{room}/")
        for text in ("m1", "m2"):
            sender.send(text)
            assert sender.receive() == text
        assert texts(reader, 2) == ["m1", "m2"]
        reader.poll(0)  # acked: only the missed ones may come again

        a.stop()  # SIGKILL
        for text in ("m3", "m4", "m5"):  # sent while the reader's session is held by no one
            sender.send(text)
            assert sender.receive() == text
        reader.target = b.url
        assert texts(reader, 4) == ["recovered", "m3", "m4", "m5"]
        sender.send("m6")
        assert texts(reader, 1) == ["m6"]
        assert reader.receive_nothing(0.5)
    finally:
        for server in servers:
            server.stop()


def test_without_checkpoints_a_killed_process_sessions_are_lost_with_404():
    env = serve_env("shared-secret-0123456789", LP_CHECKPOINTS="0")
    a, b = servers = [ServeProcess(APP, env), ServeProcess(APP, env)]
    try:
        client = LongPollClient(a.url, timeout=30)
        client.open("/ws/chat/nock/")
        a.stop()
        client.target = b.url
        status, body = client.request("poll", client.session.poll_body(0))
        assert status == 404, body
    finally:
        for server in servers:
            server.stop()


def test_a_live_but_silent_owner_is_not_robbed_of_its_session():
    """Its lease still runs: the survivor answers 503 (retry), it does not adopt."""
    env = serve_env("shared-secret-0123456789", LP_LEASE="60")
    a, b = servers = [ServeProcess(APP, env), ServeProcess(APP, env)]
    try:
        client = LongPollClient(a.url, timeout=30)
        client.open("/ws/chat/silent/")
        a.proc.send_signal(signal.SIGSTOP)  # alive, holding its lease, answering nothing
        client.target = b.url
        try:
            status, body = client.request("poll", {**client.session.poll_body(0), "wait": 0})
            assert status == 503, body
            assert wait_for(
                lambda: request(b.port, "/_wsbridge/test-sessions", method="GET")[1] == 0
            )
        finally:
            a.proc.send_signal(signal.SIGCONT)
        assert client.poll(0) == []  # forwarded to A, which still holds it
        client.send("still here")
        assert client.receive() == "still here"
    finally:
        for server in servers:
            server.stop()


def test_an_owner_that_stalled_past_its_lease_lets_the_adopter_have_the_session():
    env = serve_env("shared-secret-0123456789")
    a, b = servers = [ServeProcess(APP, env), ServeProcess(APP, env)]
    try:
        client = LongPollClient(a.url, timeout=30)
        client.open("/ws/chat/stall/")
        client.send("one")
        assert client.receive() == "one"
        a.proc.send_signal(signal.SIGSTOP)  # longer than its lease: B takes the session
        try:
            client.target = b.url
            client.send("two")
            assert client.receive() == "two"
        finally:
            a.proc.send_signal(signal.SIGCONT)
        adopter = TokenSigner.parse(client.token).owner
        # A wakes up still holding its copy; B's token reaching it sends the client to B.
        client.target = a.url
        client.send("three")
        # Nothing lost. A copy of "two" may come first: A's consumer, still a member
        # of the group while A was stopped, queued it when A woke (docs: protocol.rst).
        got = [client.receive()]
        if got == ["two"]:
            got.append(client.receive())
        assert got[-1] == "three", got
        assert client.receive_nothing(0.3) and client.closed is None
        assert TokenSigner.parse(client.token).owner == adopter
        gone = [e for e in log(a) if e["event"] == "disconnect" and e["path"] == "/ws/chat/stall/"]
        assert [e["code"] for e in gone] == [1012]  # A's consumer was let go
    finally:
        for server in servers:
            server.stop()


def test_the_sessions_of_a_gunicorn_worker_killed_with_9_go_on_in_the_other_workers(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        # Idle sessions must outlast the test's slowest steps on a loaded machine.
        **serve_env("gunicorn-secret-0123456789", LP_SESSION_TIMEOUT="60"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "--chdir", str(HERE)]
        + ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", APP],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(port), timeout=20)
        # Sessions on fresh connections, a few at once, until each worker holds one (the
        # kernel picks who accepts; the second worker may still be booting).
        clients: dict[str, LongPollClient] = {}
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                rooms = [f"g{len(clients) + i}" for i in range(4)]
                clients.update(zip(rooms, pool.map(lambda r: opened(url, r), rooms), strict=True))
                if len({TokenSigner.parse(c.token).owner for c in clients.values()}) == 2:
                    break
        pids = {room: whoami(client) for room, client in clients.items()}
        assert len(set(pids.values())) == 2, "never heard from both workers"
        victim = pids["g0"]
        doomed = [room for room, pid in pids.items() if pid == victim]
        os.kill(victim, signal.SIGKILL)
        for room in doomed:  # the other worker (or the one gunicorn starts) adopts them
            client = clients[room]
            assert whoami(client) != victim
            assert client.closed is None
        for room, client in clients.items():
            client.send(f"again-{room}")
            assert client.receive() == f"again-{room}"
            assert client.receive_nothing(0.2)
        log = (tmp_path / "gunicorn.log").read_text()
        assert "long-poll session adopted from" in log
    finally:
        proc.terminate()
        proc.wait(15)


def opened(url: str, room: str) -> LongPollClient:
    client = LongPollClient(url, timeout=30)
    client.open(f"/ws/chat/{room}/")
    return client


def whoami(client: LongPollClient) -> int:
    client.send("whoami")
    return int(json.loads(client.receive())["pid"])


def _answers(port: int) -> bool:
    try:
        return request(port, "/pid", method="GET", timeout=2)[0] == 200
    except OSError:
        return False
