"""`make demo` runs examples/run_demo.py: it migrates, serves the chat and prints the URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_demo_serves_the_chat_and_stops_with_its_server(tmp_path):
    port = free_port()
    env = dict(os.environ, CHAT_DB=str(tmp_path / "demo.sqlite3"), PYTHONUNBUFFERED="1")
    demo = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "run_demo.py"), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = ""
        deadline = time.monotonic() + 60
        while f"http://127.0.0.1:{port}/" not in banner and time.monotonic() < deadline:
            banner += demo.stdout.readline()
        assert f"open http://127.0.0.1:{port}/" in banner
        page = None
        while page is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/chat/lobby/", timeout=5
                ).read()
            except OSError:
                time.sleep(0.1)
        assert page is not None and b"/_wsbridge/wsbridge.js" in page
    finally:
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
    # Its server went with it: nothing listens on the port (TIME_WAIT left by clients is fine).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
