"""``wsbridge serve`` (the console script) finds the project in the cwd, for the app and
for ``--consumers`` alike, as the tutorial runs it: ``wsbridge serve --consumers chat myapp``.

A console script does not put the cwd on ``sys.path`` (``python -m`` does), so
this test runs the script itself, from a project directory, with nothing on
``PYTHONPATH`` but what the installed package needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from websockets.sync.client import connect

from tests.conftest import free_port, wait_for_port

WSBRIDGE = str(Path(sys.executable).with_name("wsbridge"))


def test_consumer_modules_are_imported_from_the_cwd(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        "import wsbridge\n"
        "def site(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'site']\n"
        "application = wsbridge.wrap(site)\n"
    )
    (tmp_path / "chat.py").write_text(
        "from wsbridge import WebsocketConsumer, router\n"
        "@router.websocket('ws/chat/')\n"
        "class Chat(WebsocketConsumer):\n"
        "    def receive(self, text_data=None, bytes_data=None):\n"
        "        self.send(text_data='chat ' + text_data)\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [WSBRIDGE, "serve", "--consumers", "chat", "--port", str(port), "myapp"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout=30, proc=proc)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}: {log.read_text()}") from None
        with connect(f"ws://127.0.0.1:{port}/ws/chat/", open_timeout=5) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "chat hi"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
