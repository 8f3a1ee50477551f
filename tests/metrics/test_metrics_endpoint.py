"""The Prometheus endpoint against real servers: ``wsbridge serve`` and ``gunicorn -w 2``."""

from __future__ import annotations

import re
import secrets
import sys
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import free_port, server_env, start_process

APP = "tests.metrics.metrics_app:application"
TOKEN = "scrape-" + secrets.token_hex(8)


def scrape(port: int, token: str | None = TOKEN) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_wsbridge/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return answer.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (labels in any order); 0.0 when absent."""
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


def test_wsbridge_serve_counts_handshakes_messages_exceptions_and_latency(wsbridge_serve):
    served = wsbridge_serve(APP, env=server_env(WSBRIDGE_TEST_METRICS_TOKEN=TOKEN))
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(served.port, token=None)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError):
        scrape(served.port, token="wrong")
    with connect(served.ws_url("/echo/")) as ws:
        assert ws.recv(timeout=5).startswith("pid ")
        for i in range(5):
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"
        text = scrape(served.port)
        assert value(text, "wsbridge_connections", transport="websocket", state="open") == 1
    for path, status in (("/nowhere/", 404), ("/refuse/", 403)):
        with pytest.raises(InvalidStatus) as failed, connect(served.ws_url(path)):
            pass
        assert failed.value.response.status_code == status
    with connect(served.ws_url("/room/")):  # group_add, then group_discard, on the layer
        pass
    with connect(served.ws_url("/boom/")) as ws:
        ws.send("x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if value(scrape(served.port), "wsbridge_consumer_exceptions_total", consumer="Boom"):
                break
            time.sleep(0.05)
    time.sleep(0.3)
    text = scrape(served.port)
    assert value(text, "wsbridge_messages_received_total", transport="websocket") == 6
    assert value(text, "wsbridge_messages_sent_total", transport="websocket") == 6  # pid + 5
    assert value(text, "wsbridge_received_bytes_total", transport="websocket") > 6 * 2
    assert value(text, "wsbridge_sent_bytes_total", transport="websocket") > 6 * 2
    assert value(text, "wsbridge_handshakes_total", result="accepted", reason="") == 3
    assert value(text, "wsbridge_layer_operation_seconds_count", operation="group_add") == 1
    assert value(text, "wsbridge_handshakes_total", result="refused", reason="no_route") == 1
    assert value(text, "wsbridge_handshakes_total", result="refused", reason="consumer") == 1
    assert value(text, "wsbridge_consumer_exceptions_total", consumer="Boom") == 1
    # connect + 5 receives + disconnect of Echo, each timed once
    assert value(text, "wsbridge_consumer_handler_seconds_count", consumer="Echo") == 7
    assert value(text, "wsbridge_consumer_handler_seconds_sum", consumer="Echo") > 0
    assert value(text, "wsbridge_connections", transport="websocket", state="open") == 0
    assert "# TYPE wsbridge_dropped_messages_total counter" in text or (
        "# TYPE wsbridge_dropped_messages counter" in text
    )


def gunicorn_two_workers(tmp_path):
    port = free_port()
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("from wsbridge.metrics import gunicorn_child_exit as child_exit\n")
    prefix = f"wsbmet{secrets.token_hex(4)}"
    env = server_env(
        WSBRIDGE_LAYER=f"redis://127.0.0.1:6379/0?prefix={prefix}",
        PROMETHEUS_MULTIPROC_DIR=str(prom_dir),
        WSBRIDGE_TEST_METRICS_TOKEN=TOKEN,
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        "2",
        "-c",
        str(config),
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        "--no-control-socket",
        APP,
    ]
    return start_process(command, tmp_path / "gunicorn.log", port, env=env)


@pytest.mark.redis
def test_gunicorn_two_workers_one_scrape_shows_both_workers_counts(tmp_path):
    server = gunicorn_two_workers(tmp_path)
    try:
        pids: dict[int, int] = {}
        sockets = []
        deadline = time.monotonic() + 30
        # Open connections until both workers hold some (bounded in count and time).
        while (len(pids) < 2 or len(sockets) < 6) and len(sockets) < 40:
            assert time.monotonic() < deadline, f"only workers {pids} answered"
            ws = connect(server.ws_url("/echo/"))  # closed below
            pid = int(ws.recv(timeout=5).split()[1])
            pids[pid] = pids.get(pid, 0) + 1
            sockets.append(ws)
        for ws in sockets:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        opened = len(sockets)
        time.sleep(2.5)  # each worker flushes every second
        for _ in range(6):  # whichever worker answers, the sums are everybody's
            text = scrape(server.port)
            assert value(text, "wsbridge_messages_received_total", transport="websocket") == opened
            assert value(text, "wsbridge_messages_sent_total", transport="websocket") == 2 * opened
            assert value(text, "wsbridge_handshakes_total", result="accepted", reason="") == opened
            # connect + one receive per socket, timed in whichever worker held it
            handled = value(text, "wsbridge_consumer_handler_seconds_count", consumer="Echo")
            assert handled == 2 * opened
            open_now = value(text, "wsbridge_connections", transport="websocket", state="open")
            assert open_now == opened
        for ws in sockets:
            ws.close()
        time.sleep(2.5)
        text = scrape(server.port)
        assert value(text, "wsbridge_connections", transport="websocket", state="open") == 0
    finally:
        status = server.stop()
    assert status == 0, server.log()
    assert "Traceback" not in server.log()
