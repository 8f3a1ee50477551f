"""The tutorial's serve command works on the project the tutorial builds.

The python blocks are run by test_docs_run.py; this takes the tutorial's own
``wsbridge serve`` console line for Part 3 from the page, runs it (on a free
port) in the project the page wrote, and talks to it with a real WebSocket
client: the echo, the chat, and the transcript written by the background
channel in the same process.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import rstblocks
from websockets.sync.client import connect

from tests.conftest import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.rst"
BIN = Path(sys.executable).parent


def serve_command() -> list[str]:
    """The tutorial's ``$ .venv/bin/wsbridge serve --consumers chat,transcripts myapp``."""
    for block in rstblocks.parse(TUTORIAL):
        if block.language != "console":
            continue
        for line in block.code.splitlines():
            if "wsbridge serve --consumers chat,transcripts" in line and "\\" not in line:
                argv = shlex.split(line.removeprefix("$ "))
                return [str(BIN / Path(argv[0]).name), *argv[1:]]
    raise AssertionError("the tutorial's Part 3 serve command is gone: update this test")


def test_the_tutorial_project_serves_as_the_tutorial_says(tmp_path: Path) -> None:
    # Without the test run's Django/pytest settings (tests/django's conftest sets
    # DJANGO_SETTINGS_MODULE, which would make the page's own pytest load djtest).
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    build = subprocess.run(
        [sys.executable, str(ROOT / "tests/docs/runpage.py"), str(TUTORIAL), "docs/tutorial.rst"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=clean,
    )
    assert build.returncode == 0, build.stderr
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*serve_command(), "--port", str(port)],
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
        with connect(f"ws://127.0.0.1:{port}/ws/echo/", open_timeout=5) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        with (
            connect(f"ws://127.0.0.1:{port}/ws/logged-chat/lobby/", open_timeout=5) as ann,
            connect(f"ws://127.0.0.1:{port}/ws/chat/lobby/", open_timeout=5) as bob,
        ):
            ann.send(json.dumps({"text": "hello bob"}))
            assert json.loads(ann.recv(timeout=5)) == {"text": "hello bob"}
            assert json.loads(bob.recv(timeout=5)) == {"text": "hello bob"}
        transcript = tmp_path / "chat.lobby.log"
        deadline = time.monotonic() + 10
        while not transcript.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert transcript.read_text(encoding="utf-8") == "hello bob\n"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
