"""Real servers for the Django tests: ``wsbridge serve djtest.wsgi`` or gunicorn, in a subprocess.

Each server gets its own environment (database, session engine, layer),
listens on a free port, and is stopped by PID. Its log (stderr) is kept so
tests can check the log line a refusal writes.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = sys.executable
_READY = re.compile(rb"listening on http://[^:]+:(\d+)/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["DJANGO_SETTINGS_MODULE"] = "djtest.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``manage.py`` of the test project; raises with its output on failure."""
    done = subprocess.run(
        [PY, str(HERE / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


class DjangoServer:
    """One server process; ``url`` / ``ws_url`` once started; ``log()`` reads its stderr."""

    def __init__(self, command: list[str], env: dict[str, str], *, port: int | None = None) -> None:
        self.command = command
        self.env = env
        self.port = port
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(
            prefix="wsbridge-djtest-", suffix=".log", delete=False
        )

    @classmethod
    def wsbridge_serve(cls, env: dict[str, str], app: str = "djtest.wsgi") -> DjangoServer:
        return cls([PY, "-m", "wsbridge", "serve", app, "--port", "0"], env)

    @classmethod
    def gunicorn(
        cls, env: dict[str, str], workers: int = 2, app: str = "djtest.wsgi"
    ) -> DjangoServer:
        port = free_port()
        command = [
            PY,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "20",
            "--log-level",
            "info",
            app,
        ]
        return cls(command, env, port=port)

    def start(self, timeout: float = 30) -> DjangoServer:
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.PIPE, stderr=self._log, cwd=str(HERE)
        )
        if self.port is None:
            self.port = self._read_port(timeout)
        self.wait_http(timeout)
        return self

    def _read_port(self, timeout: float) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited ({self.proc.wait()}):\n{self.log()}")
            found = _READY.search(line)
            if found:
                return int(found.group(1))
        raise RuntimeError(f"server did not say it was listening:\n{self.log()}")

    def wait_http(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return
            except OSError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited ({self.proc.returncode}):\n{self.log()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never appeared in the server log:\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> DjangoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


@contextlib.contextmanager
def postgres_database(prefix: str = "wsbridge_t") -> Iterator[str]:
    """A throwaway PostgreSQL database on 127.0.0.1:5432 (user postgres), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
