"""Management commands for real: runserver (WebSocket, static, autoreload), runworker on Redis."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest
from djclient import http_get, ws_connect
from djtest_server import HERE, DjangoServer, base_env, free_port, manage
from websockets.exceptions import ConnectionClosed

ROOT = HERE.parent.parent


@pytest.fixture(scope="module")
def sqlite_env(tmp_path_factory):
    db = tmp_path_factory.mktemp("djcmd") / "db.sqlite3"
    env = base_env(WSBRIDGE_TEST_DB=f"sqlite:{db}")
    manage("migrate", "-v", "0", env=env)
    return env


def runserver(env, *extra):
    port = free_port()
    command = [sys.executable, str(HERE / "manage.py"), "runserver", f"127.0.0.1:{port}", *extra]
    return DjangoServer(command, env, port=port)


def test_runserver_serves_pages_websockets_and_the_js_client_from_staticfiles(sqlite_env):
    with runserver(sqlite_env, "--noreload", "--insecure") as server:
        assert http_get(server.url + "/")[1] == "ordinary page ok"
        with ws_connect(server.ws_url + "/ws/echo/", origin=server.url) as ws:
            ws.send("through runserver")
            assert ws.recv(timeout=5) == "through runserver"
        status, body, _ = http_get(server.url + "/static/wsbridge/wsbridge.js")
        assert status == 200
        assert body == (ROOT / "wsbridge/static/wsbridge/wsbridge.js").read_text()


def test_runserver_reloads_when_code_changes(sqlite_env):
    watched = HERE / "djtest" / "urls.py"
    with runserver(sqlite_env) as server:
        ws = ws_connect(server.ws_url + "/ws/echo/", origin=server.url).__enter__()
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        stat = watched.stat()
        closed = False
        try:
            # Bumped again and again, each time later: a reloader that took its first
            # snapshot after a single bump (a loaded machine) would never see a change,
            # and another run of this test on the same checkout may set it back.
            deadline = time.monotonic() + 15
            step = 0
            while not closed and time.monotonic() < deadline:
                step += 1
                os.utime(watched, (stat.st_atime, stat.st_mtime + 5 * step))
                try:
                    ws.recv(timeout=1)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    closed = True  # the old server process went away
                else:
                    raise AssertionError("the echo socket got a message it did not ask for")
        finally:
            os.utime(watched, (stat.st_atime, stat.st_mtime))
            ws.close()
        assert closed, "runserver did not reload within 15 s of the change"
        server.wait_http(20)
        with ws_connect(server.ws_url + "/ws/echo/", origin=server.url) as again:
            again.send("after")
            assert again.recv(timeout=5) == "after"


def test_runworker_runs_background_channels_sent_from_another_process(sqlite_env):
    prefix = f"wsbt{secrets.token_hex(4)}"
    env = dict(sqlite_env, WSBRIDGE_TEST_REDIS_PREFIX=prefix)
    manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from djtest.models import Note; Note.objects.create(pk=7, title='t')",
        env=env,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "manage.py"),
            "runworker",
            "djtest.touch",
            "--concurrency",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = worker.stdout.readline()
        assert "runworker: channels djtest.touch on RedisLayer" in line, line
        manage(
            "shell",
            "-v",
            "0",
            "-c",
            "from wsbridge import Channel; Channel('djtest.touch').send({'pk': 7, 'body': 'done'})",
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = manage(
                "shell",
                "-v",
                "0",
                "-c",
                "from djtest.models import Note; print(Note.objects.get(pk=7).body)",
                env=env,
            ).stdout.strip()
            if out == "done":
                break
            time.sleep(0.2)
        assert out == "done"
    finally:
        worker.terminate()
        assert worker.wait(30) == 0


def test_runworker_with_no_matching_channel_says_why(sqlite_env):
    done = subprocess.run(
        [sys.executable, str(HERE / "manage.py"), "runworker", "no.such.channel"],
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no background channel to run" in done.stderr


def test_wsbridge_status_reports_the_sites_own_layer(sqlite_env):
    prefix = f"wsbs{secrets.token_hex(4)}"
    env = dict(sqlite_env, WSBRIDGE_TEST_REDIS_PREFIX=prefix)
    done = subprocess.run(
        [sys.executable, str(HERE / "manage.py"), "wsbridge_status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["backend"] == "redis" and stats["prefix"] == prefix
