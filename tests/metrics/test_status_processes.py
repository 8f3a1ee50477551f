"""``wsbridge status`` and ``manage.py wsbridge_status`` across two real server processes."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import ROOT, server_env

APP = "tests.metrics.metrics_app:application"
DJANGO_DIR = ROOT / "tests" / "django"


def status_json(*command: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict:
    done = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(processes_of, want: dict[int, int], timeout: float = 20.0) -> list[dict]:
    """Poll until each pid in ``want`` reports that many open WebSockets (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        processes = processes_of()
        seen = {p["pid"]: p["gauges"].get("websockets") for p in processes}
        if all(seen.get(pid) == count for pid, count in want.items()) or (
            time.monotonic() > deadline
        ):
            return processes
        time.sleep(0.5)


@pytest.mark.redis
def test_two_serving_processes_each_list_pid_host_uptime_connections_and_drops(
    wsbridge_serve,
):
    prefix = f"wsbst{secrets.token_hex(4)}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    env = server_env(WSBRIDGE_LAYER=url, WSBRIDGE_SECRET="s" * 32)
    one, two = wsbridge_serve(APP, env=env), wsbridge_serve(APP, env=env)
    sockets = [connect(one.ws_url("/echo/")) for _ in range(2)] + [connect(two.ws_url("/echo/"))]
    try:
        for ws in sockets:
            assert ws.recv(timeout=5).startswith("pid ")
        command = (sys.executable, "-m", "wsbridge", "status", "--layer", url)
        processes = wait_for(lambda: status_json(*command)["processes"], {one.pid: 2, two.pid: 1})
        by_pid = {p["pid"]: p for p in processes}
        assert set(by_pid) == {one.pid, two.pid}, processes
        for pid, websockets in ((one.pid, 2), (two.pid, 1)):
            proc = by_pid[pid]
            assert proc["role"] == "server" and proc["host"]
            assert proc["gauges"]["websockets"] == websockets
            assert proc["gauges"]["longpoll_sessions"] == 0
            assert proc["gauges"]["sse_streams"] == 0
            assert proc["beat"] >= proc["started"]
            assert isinstance(proc["drops"], dict)
        text = subprocess.run(
            list(command), capture_output=True, text=True, timeout=60, cwd=ROOT
        ).stdout
        assert "processes: 2 alive" in text, text
        assert f":{one.pid}" in text and f":{two.pid}" in text
        # The Django command reads the site's layer (same Redis, same prefix).
        django_env = server_env(WSBRIDGE_TEST_REDIS_PREFIX=prefix)
        stats = status_json(
            sys.executable,
            str(DJANGO_DIR / "manage.py"),
            "wsbridge_status",
            env=django_env,
            cwd=DJANGO_DIR,
        )
        assert {p["pid"] for p in stats["processes"]} == {one.pid, two.pid}
    finally:
        for ws in sockets:
            ws.close()
    # A stopped process vanishes after its TTL; the other stays.
    assert one.stop() == 0
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        pids = {p["pid"] for p in status_json(*command)["processes"]}
        if pids == {two.pid}:
            break
        time.sleep(1)
    assert pids == {two.pid}
