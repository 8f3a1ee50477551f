"""Fixtures for the examples' tests: each example runs for real, as its README says."""

from __future__ import annotations

# Patched first, like tests/conftest.py (when only examples/ is collected).
from gevent import monkey

monkey.patch_all()

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
_READY = re.compile(rb"listening on http://[^:]+:(\d+)/")


class ExampleServer:
    """``wsbridge serve <project>.wsgi`` in an example's folder, on a free port."""

    def __init__(self, folder: Path, wsgi: str, env: dict[str, str]) -> None:
        self.folder, self.wsgi, self.env = folder, wsgi, env
        self.log_file = tempfile.NamedTemporaryFile(
            prefix="wsbridge-example-", suffix=".log", delete=False
        )
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, port: int = 0) -> ExampleServer:
        """Start it (on ``port``, or a free one); call again after :meth:`kill` to restart."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsbridge", "serve", self.wsgi, "--port", str(port)],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(Path(self.log_file.name).read_text())
            found = _READY.search(line)
            if found:
                self.port = int(found.group(1))
                return self
        raise RuntimeError("the example server never said it was listening")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            response = urllib.request.urlopen(self.url + path, timeout=10)
        except urllib.error.HTTPError as exc:
            response = exc
        return response.status, response.read().decode()

    def kill(self) -> None:
        """SIGKILL (kill -9): no cleanup at all, as a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if not os.environ.get("WSBRIDGE_KEEP_LOGS"):  # set it to read a failed run's logs
            os.unlink(self.log_file.name)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Kept on the item, so a fixture's teardown knows whether its test failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


#: Lines of each server's log printed when a test that used it failed.
LOG_TAIL = 80


@pytest.fixture
def example_server(tmp_path, request):
    """``example_server("chat", "chatsite", DB_ENV)``: migrated, started, stopped afterwards.

    When the test fails, the end of each server's log is printed with it.
    """
    started: list[ExampleServer] = []

    def run(name: str, project: str, db_env: str, **extra: str) -> ExampleServer:
        env = dict(
            os.environ, DJANGO_SETTINGS_MODULE=f"{project}.settings", PYTHONUNBUFFERED="1", **extra
        )
        env[db_env] = str(tmp_path / f"{name}.sqlite3")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        server = ExampleServer(EXAMPLES / name, f"{project}.wsgi", env)
        server.manage("migrate", "-v", "0")
        started.append(server)
        return server.start()

    yield run
    failed = getattr(getattr(request.node, "report_call", None), "failed", False)
    for number, server in enumerate(started):
        if failed and os.path.exists(server.log_file.name):  # before stop() removes it
            lines = Path(server.log_file.name).read_text(errors="replace").splitlines()
            print(f"\n--- server {number} log, last {LOG_TAIL} lines ---")
            print("\n".join(lines[-LOG_TAIL:]))
        server.stop()
