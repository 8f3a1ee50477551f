"""uWSGI in gevent mode (``pyuwsgi``), a third server beside wsbridge serve and gunicorn.

Real ``uwsgi --http-socket ... --gevent N`` processes serve tests/transport/uwsgi_app.py
on the Redis layer: WebSocket (wsbridge's transport on the raw connection),
long-poll, SSE, two workers sharing groups, and a graceful reload
(``uwsgi --reload``) that closes WebSockets with 1012 and hands long-poll
sessions over to the new workers.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lp_support import Client, wait_for
from lp_support import request as http_request
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ROOT, free_port, server_env
from wsbridge.transport.uwsgi import FORK_HOOKS_MISSING

pytestmark = pytest.mark.redis

HERE = Path(__file__).parent
UWSGI = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or shutil.which("uwsgi")
MERCY = 30  # --worker-reload-mercy: a reload that waits for it has failed

if UWSGI is None:  # pragma: no cover - pyuwsgi is in the dev extra
    raise RuntimeError("uwsgi not found: pip install -e '.[dev]' (pyuwsgi)")


class Uwsgi:
    """One uWSGI master with ``workers`` gevent workers on a free port."""

    def __init__(
        self, tmp_path: Path, workers: int = 2, *, gevent: bool = True, lazy: bool = True
    ) -> None:
        self.port = free_port()
        self.pidfile = tmp_path / "uwsgi.pid"
        self.log_path = tmp_path / "uwsgi.log"
        self.prefix = "wsbridge-uwsgi-" + secrets.token_hex(4)
        env = server_env(
            LP_REDIS_PREFIX=self.prefix,
            WSBRIDGE_SECRET="uwsgi-secret-0123456789",
            PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
        )
        command = [
            UWSGI,
            "--http-socket", f"127.0.0.1:{self.port}",
            *(["--gevent", "200", "--gevent-early-monkey-patch"] if gevent else []),
            "--master",
            # the app is loaded in each worker (docs/topics/deployment.rst)
            *(["--lazy-apps"] if lazy else []),
            "--processes", str(workers),
            "--chdir", str(HERE),
            "--module", "uwsgi_app:application",
            "--need-app",
            "--pidfile", str(self.pidfile),
            "--worker-reload-mercy", str(MERCY),
            "--die-on-term",
            # pyuwsgi's binary reload re-runs the uwsgi script with this interpreter:
            # by default the venv's base one, which has no pyuwsgi (docs: deployment)
            "--binary-path", sys.executable,
        ]  # fmt: skip
        self.command = command
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=log, stderr=log)
        wait_for(self.answers, timeout=30)
        self.workers = workers
        self.wait_ready(1)

    def wait_ready(self, generation: int) -> None:
        """Wait until every worker of the n-th start (1, then 2 after a reload) is ready."""
        # with --lazy-apps each worker imports the app itself (else the master, once)
        ready = "WSGI app 0 (mountpoint='') ready"
        per_start = self.workers if "--lazy-apps" in self.command else 1
        wait_for(lambda: self.log().count(ready) >= per_start * generation, 30)

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"uwsgi exited ({self.proc.returncode}):\n{self.log()}")
        try:
            return http_request(self.port, "/pid", method="GET", timeout=2)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def reload(self) -> None:
        """``uwsgi --reload PIDFILE``: the graceful reload (SIGHUP to the master)."""
        subprocess.run([UWSGI, "--reload", str(self.pidfile)], check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # --die-on-term: shut down
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def uwsgi(tmp_path):
    server = Uwsgi(tmp_path)
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()
    assert FORK_HOOKS_MISSING not in server.log()


def test_websocket_echo_with_compression_under_uwsgi(uwsgi):
    for i in range(3):
        with connect(uwsgi.ws("/ws/echo/")) as ws:
            ws.send(f"hello {i}")
            assert ws.recv(timeout=5) == f"hello {i}"
            ws.send(b"\x00\xff" * 1000)
            assert ws.recv(timeout=5) == b"\x00\xff" * 1000
            # wsbridge's own handshake, not uWSGI's: permessage-deflate is negotiated
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
    with connect(uwsgi.ws("/ws/echo/")) as ws:
        ws.send("close:4321")  # a close code of the consumer's choice reaches the client
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4321
    # the HTTP side of the same app still answers on the same server
    assert http_request(uwsgi.port, "/pid", method="GET")[0] == 200


def test_a_refused_origin_gets_403_from_wsbridge_not_uwsgi(uwsgi):
    conn = http.client.HTTPConnection("127.0.0.1", uwsgi.port, timeout=5)
    conn.request("GET", "/ws/echo/", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://evil.example",
    })  # fmt: skip
    assert conn.getresponse().status == 403
    conn.close()


def test_longpoll_and_sse_under_uwsgi_share_the_chat_group(uwsgi):
    room = "r" + secrets.token_hex(3)
    client = Client(uwsgi.port, f"/ws/chat/{room}/")
    conn = http.client.HTTPConnection("127.0.0.1", uwsgi.port, timeout=10)
    conn.request("GET", f"/sse/{room}/")
    stream = conn.getresponse()
    assert stream.status == 200
    assert stream.getheader("Content-Type").startswith("text/event-stream")
    stream.fp.readline()  # the opening comment line
    time.sleep(0.3)  # both are in the group once their first request is being served
    client.send("from long-poll")
    assert client.texts_until(1) == ["from long-poll"]
    lines = []
    deadline = time.monotonic() + 10
    while "data: from long-poll" not in lines and time.monotonic() < deadline:
        lines.append(stream.fp.readline().decode().strip())
    assert "data: from long-poll" in lines, lines
    conn.close()


def _pidchat(server: Uwsgi, room: str):
    ws = connect(server.ws(f"/ws/pidchat/{room}/")).__enter__()  # closed by the test
    return ws, json.loads(ws.recv(timeout=5))["pid"]


def test_two_uwsgi_workers_share_groups_on_the_redis_layer(uwsgi):
    room = "r" + secrets.token_hex(3)
    by_pid: dict[int, list] = {}
    opened = []
    try:
        # fresh connections until both workers hold some (the kernel picks who accepts)
        deadline = time.monotonic() + 30
        while len(by_pid) < 2 and len(opened) < 60 and time.monotonic() < deadline:
            ws, pid = _pidchat(uwsgi, room)
            opened.append(ws)
            by_pid.setdefault(pid, []).append(ws)
        assert len(by_pid) == 2, f"every connection went to one worker: {by_pid.keys()}"
        first, second = (sockets[0] for sockets in by_pid.values())
        first.send("from one worker")
        for ws in opened:  # every member, on either worker, gets it once
            assert ws.recv(timeout=5) == "from one worker"
        second.send("from the other")
        for ws in opened:
            assert ws.recv(timeout=5) == "from the other"
    finally:
        for ws in opened:
            ws.close()


def test_reload_closes_websockets_with_1012_and_hands_longpoll_sessions_over(uwsgi):
    room = "r" + secrets.token_hex(3)
    sockets = [_pidchat(uwsgi, room)[0] for _ in range(3)]
    client = Client(uwsgi.port, "/ws/echo/")
    client.send("before")
    assert client.texts_until(1) == ["before"]
    old_pids = {http_request(uwsgi.port, "/pid", method="GET")[1]["pid"] for _ in range(6)}

    started = time.monotonic()
    uwsgi.reload()
    for ws in sockets:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=MERCY)
        assert closed.value.rcvd is not None, "no close frame: the socket was just dropped"
        assert closed.value.rcvd.code == 1012
    # The long-poll session goes on on a new worker: nothing lost, same session.
    client.send("after")
    assert client.texts_until(1, deadline=MERCY) == ["after"]
    assert client.closed is None and client.session.seen == 2
    # The old workers left at once (not after the mercy) and new ones answer.
    new_pid = http_request(uwsgi.port, "/pid", method="GET")[1]["pid"]
    assert new_pid not in old_pids
    assert time.monotonic() - started < MERCY / 2, "the reload waited for uWSGI's mercy"
    closed_counts = re.findall(r"uWSGI reload: closing (\d+) WebSocket", uwsgi.log())
    assert sum(map(int, closed_counts)) == 3, uwsgi.log()
    # ...and reconnecting clients are served by the new workers.
    uwsgi.wait_ready(2)
    with connect(uwsgi.ws("/ws/echo/")) as ws:
        ws.send("again")
        assert ws.recv(timeout=5) == "again"


def test_uwsgi_without_gevent_refuses_websockets_with_500_and_says_why(tmp_path):
    server = Uwsgi(tmp_path, workers=1, gevent=False)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/ws/echo/", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        })  # fmt: skip
        response = conn.getresponse()
        assert response.status == 500
        assert "uwsgi --gevent" in response.read().decode()
        conn.close()
        assert http_request(server.port, "/pid", method="GET")[0] == 200  # HTTP still works
    finally:
        server.stop()
    assert "cannot hand the client socket over" in server.log()


def test_app_loaded_in_the_master_without_fork_hooks_logs_an_error_naming_lazy_apps(tmp_path):
    # Without --lazy-apps uWSGI imports the app in the master and forks in C, running
    # none of Python's at-fork hooks: every worker would share the layer's identity.
    server = Uwsgi(tmp_path, workers=2, lazy=False)
    try:
        for _ in range(6):  # reach both workers (the kernel picks who accepts)
            assert http_request(server.port, "/pid", method="GET")[0] == 200
        wait_for(lambda: FORK_HOOKS_MISSING in server.log(), timeout=10)
        assert "--lazy-apps" in FORK_HOOKS_MISSING
    finally:
        server.stop()
