"""One layer per process: a view's ``group_send`` reaches the sockets of every worker.

Under stock ``gunicorn -k gevent -w 2`` on the Redis layer, one socket is
put on each worker, then a view (on whichever worker takes the request)
publishes through ``get_channel_layer()``: both sockets must get every
message, for a plain WSGI site (layer given to ``wrap(layer=)``), a Flask
app and a Django site (layer named by ``WSBRIDGE_LAYER``), and for
``wsbridge serve --layer`` with a Django site whose settings name another layer.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import (
    ROOT,
    Served,
    free_port,
    server_env,
    sockets_on_two_workers,
    start_process,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

DJANGO_DIR = ROOT / "tests" / "django"


def _redis_url() -> str:
    return f"redis://127.0.0.1:6379/0?prefix=onelayer{secrets.token_hex(4)}"


@contextlib.contextmanager
def gunicorn(app: str, tmp_path: Path, **env: str) -> Iterator[Served]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        app,
    ]
    full_env = server_env(**env)
    full_env["PYTHONPATH"] = f"{DJANGO_DIR}:{full_env['PYTHONPATH']}"
    served = start_process(command, tmp_path / f"gunicorn-{port}.log", port, env=full_env)
    try:
        yield served
    finally:
        served.stop()


def on_two_workers(served: Served, stack: contextlib.ExitStack, path: str) -> dict:
    """{pid: socket}, one per gunicorn worker (see ``tests.conftest.sockets_on_two_workers``)."""
    origin = served.url("").rstrip("/")
    return sockets_on_two_workers(
        lambda: connect(served.ws_url(path), origin=origin, open_timeout=10), stack
    )


def publish_and_check(served: Served, sockets: dict, count: int = 6) -> set[str]:
    """Publish ``count`` messages through the view; every socket must get them all."""
    answers = set()
    for i in range(count):
        with urllib.request.urlopen(served.url(f"/publish/?text=m{i}"), timeout=10) as response:
            answers.add(response.read().decode())
    for pid, ws in sockets.items():
        got = [json.loads(ws.recv(timeout=10))["text"] for _ in range(count)]
        assert sorted(got) == sorted(f"m{i}" for i in range(count)), (pid, got, answers)
    return answers


def test_plain_wsgi_wrap_layer_is_the_layer_views_send_through(tmp_path):
    with (
        gunicorn("tests.e2e.one_layer_app:plain", tmp_path, APP_LAYER=_redis_url()) as served,
        contextlib.ExitStack() as stack,
    ):
        sockets = on_two_workers(served, stack, "/ws/room/")
        answers = publish_and_check(served, sockets)
        assert all(answer.endswith("on RedisLayer") for answer in answers), answers


def test_flask_app_on_wsbridge_layer_env_reaches_both_workers(tmp_path):
    with (
        gunicorn(
            "tests.e2e.one_layer_flask:application", tmp_path, WSBRIDGE_LAYER=_redis_url()
        ) as served,
        contextlib.ExitStack() as stack,
    ):
        sockets = on_two_workers(served, stack, "/ws/room/")
        publish_and_check(served, sockets)


@pytest.mark.parametrize("source", ["env", "settings"])
def test_django_site_view_group_send_reaches_both_workers(tmp_path, source):
    env = {
        "DJANGO_SETTINGS_MODULE": "djtest.settings",
        "WSBRIDGE_TEST_DB": f"sqlite:{tmp_path / 'db.sqlite3'}",
    }
    if source == "env":
        env["WSBRIDGE_LAYER"] = _redis_url()
    else:
        env["WSBRIDGE_TEST_REDIS_PREFIX"] = f"onelayer{secrets.token_hex(4)}"
    with gunicorn("djtest.wsgi", tmp_path, **env) as served, contextlib.ExitStack() as stack:
        sockets = on_two_workers(served, stack, "/ws/room-pid/")
        publish_and_check(served, sockets)


def test_serve_layer_option_wins_over_the_django_settings(tmp_path):
    """``wsbridge serve --layer URL`` for a Django site whose settings name another
    Redis prefix: the sockets and the views use the --layer one."""
    from wsbridge.worker import layer_from_option

    url = _redis_url()
    env = server_env(
        DJANGO_SETTINGS_MODULE="djtest.settings",
        WSBRIDGE_TEST_REDIS_PREFIX=f"settings{secrets.token_hex(4)}",
        WSBRIDGE_TEST_DB=f"sqlite:{tmp_path / 'db.sqlite3'}",
    )
    env["PYTHONPATH"] = f"{DJANGO_DIR}:{env['PYTHONPATH']}"
    port = free_port()
    served = start_process(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            "djtest.wsgi",
            "--port",
            str(port),
            "--layer",
            url,
        ],
        tmp_path / "serve.log",
        port,
        env=env,
    )
    outside = layer_from_option(url)
    try:
        with connect(
            served.ws_url("/ws/room-pid/"), origin=served.url("").rstrip("/"), open_timeout=10
        ) as ws:
            json.loads(ws.recv(timeout=10))
            # From another process (this test), on the --layer layer: reaches the socket.
            outside.group_send("djtest.room", {"type": "room.message", "text": "out", "pid": 0})
            assert json.loads(ws.recv(timeout=10))["text"] == "out"
            with urllib.request.urlopen(served.url("/publish/?text=view"), timeout=10) as resp:
                assert resp.read().decode().endswith("on RedisLayer")
            assert json.loads(ws.recv(timeout=10))["text"] == "view"
        assert "(from serve)" in served.log()
    finally:
        outside.flush()
        outside.close()
        served.stop()


def test_plain_wsgi_on_the_memory_layer_under_two_workers_refuses_to_start(tmp_path):
    import subprocess

    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gevent",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "tests.e2e.one_layer_app:plain",
            ],
            cwd=ROOT,
            env=server_env(APP_LAYER="memory"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        status = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = log_path.read_text(errors="replace")
    assert status != 0, text
    assert "2 processes serve this app but the channel layer" in text, text
    assert "WSBRIDGE_LAYER=redis://" in text


def test_serve_warns_at_start_up_when_no_consumer_is_routed(tmp_path):
    (tmp_path / "noroutes_site.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
    )
    env = server_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    port = free_port()
    served = start_process(
        [sys.executable, "-m", "wsbridge", "serve", "noroutes_site", "--port", str(port)],
        tmp_path / "serve.log",
        port,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while "no consumer is routed" not in served.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "no consumer is routed" in served.log()
    finally:
        served.stop()


def test_serve_reads_wsbridge_layer_as_worker_status_and_check_do(tmp_path):
    from wsbridge.worker import layer_from_option

    url = _redis_url()
    port = free_port()
    served = start_process(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            "tests.e2e.one_layer_flask:application",
            "--port",
            str(port),
        ],
        tmp_path / "serve.log",
        port,
        env=server_env(WSBRIDGE_LAYER=url),
    )
    outside = layer_from_option(url)
    try:
        with connect(served.ws_url("/ws/room/"), open_timeout=10) as ws:
            json.loads(ws.recv(timeout=10))
            outside.group_send("onelayer.room", {"type": "room.message", "text": "out", "pid": 0})
            assert json.loads(ws.recv(timeout=10))["text"] == "out"
        assert "(from env)" in served.log()
    finally:
        outside.flush()
        outside.close()
        served.stop()
