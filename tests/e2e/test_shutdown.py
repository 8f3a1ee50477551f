"""Graceful shutdown outside Django: SIGTERM/SIGHUP close WebSockets with a code.

* ``gunicorn -k gevent``: a reload (SIGHUP to the master) or a stop (SIGTERM)
  sends SIGTERM to the workers; a plain WSGI or Flask app's sockets get 1012
  at once, not a dropped connection at the graceful timeout;
* ``wsbridge serve``: SIGTERM closes with 1001, SIGHUP with 1012, and the
  process exits.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import free_port, server_env, start_process

pytestmark = pytest.mark.slow

GRACEFUL = 20  # gunicorn's --graceful-timeout: a close long before it is the handler's work


def close_code(ws, timeout: float = 10) -> tuple[int | None, float]:
    """Wait for the server's close; (code, seconds it took)."""
    started = time.monotonic()
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), time.monotonic() - started


def gunicorn(app: str, tmp_path, **env: str):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        str(GRACEFUL),
        app,
    ]
    return start_process(command, tmp_path / f"gunicorn-{port}.log", port, env=server_env(**env))


@contextlib.contextmanager
def open_room(served):
    with connect(
        served.ws_url("/ws/room/"), origin=served.url("").rstrip("/"), open_timeout=10
    ) as ws:
        json.loads(ws.recv(timeout=10))  # {"pid": ...}: the consumer runs
        yield ws


def test_gunicorn_reload_closes_a_plain_wsgi_apps_sockets_with_1012(tmp_path):
    served = gunicorn("tests.e2e.one_layer_app:plain", tmp_path, APP_LAYER="memory")
    try:
        with open_room(served) as ws:
            served.proc.send_signal(signal.SIGHUP)  # new worker; SIGTERM to the old one
            code, took = close_code(ws)
        assert code == 1012, served.log()
        assert took < GRACEFUL / 2
        with open_room(served):  # the new worker serves the reconnection
            pass
    finally:
        served.stop()


def test_gunicorn_stop_closes_a_flask_apps_sockets_with_1012(tmp_path):
    served = gunicorn("tests.e2e.one_layer_flask:application", tmp_path, WSBRIDGE_LAYER="memory")
    try:
        with open_room(served) as ws:
            started = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            code, _ = close_code(ws)
        assert code == 1012, served.log()
        served.proc.wait(GRACEFUL)
        assert time.monotonic() - started < GRACEFUL / 2
    finally:
        served.stop()


@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGTERM, 1001), (signal.SIGHUP, 1012)])
def test_wsbridge_serve_closes_with_1001_on_sigterm_and_1012_on_sighup(tmp_path, signum, expected):
    port = free_port()
    served = start_process(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            "tests.e2e.one_layer_app:plain",
            "--port",
            str(port),
        ],
        tmp_path / "serve.log",
        port,
        env=server_env(APP_LAYER="memory"),
    )
    try:
        with open_room(served) as ws:
            served.proc.send_signal(signum)
            code, _ = close_code(ws)
        assert code == expected, served.log()
        assert served.proc.wait(15) == 0, served.log()
    finally:
        served.stop()
