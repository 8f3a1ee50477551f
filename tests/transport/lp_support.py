"""Long-poll test helpers: lp_server.py and ``wsbridge serve`` processes, the protocol."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wsbridge.protocol.envelope import encode_frame
from wsbridge.testing import LongPollClient

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


class Server:
    """One lp_server.py process on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "lp_server.py"), *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        line = self.proc.stdout.readline()  # blocks until it listens (or dies)
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"lp_server.py did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(
    port: int,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    timeout: float = 30,
) -> tuple[int, Any]:
    """One HTTP request on a fresh connection; returns (status, decoded JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text
    finally:
        conn.close()


LP = "/_wsbridge/lp"


class Client(LongPollClient):
    """wsbridge.testing.LongPollClient with the raw helpers these tests use (frames as dicts).

    ``port=`` on a call sends that one request to another server process.
    """

    def __init__(self, port: int, path: str, *, origin: str | None = None) -> None:
        super().__init__(f"http://127.0.0.1:{port}", origin=origin, timeout=10)
        self.port = port
        self.open(path)

    @classmethod
    def from_token(cls, port: int, token: str) -> Client:
        """A client for a session opened by hand (custom open body or headers)."""
        client = cls.__new__(cls)
        LongPollClient.__init__(client, f"http://127.0.0.1:{port}", timeout=10)
        client.port = port
        client.session.token = token
        return client

    seen = property(lambda self: self.session.seen)
    sent = property(
        lambda self: self.session.sent, lambda self, value: setattr(self.session, "sent", value)
    )

    @contextlib.contextmanager
    def _at(self, port: int | None) -> Iterator[None]:
        target = self.target
        if port is not None:
            self.target = f"http://127.0.0.1:{port}"
        try:
            yield
        finally:
            self.target = target

    def call(self, op: str, port: int | None = None, **fields: Any) -> tuple[int, Any]:
        """One raw request with this session's token; (status, JSON body)."""
        with self._at(port):
            return self.request(op, {"token": self.token, **fields})

    def poll(self, port: int | None = None, wait: float | None = None) -> list[dict]:  # type: ignore[override]
        """One poll; returns the new frames (seq > seen) as JSON dicts and advances ``seen``."""
        with self._at(port):
            return [encode_frame(frame) for frame in super().poll(wait)]

    def send(self, *texts: str, port: int | None = None) -> int:  # type: ignore[override]
        """Send texts (one request); returns the server's ack."""
        for text in texts:
            self.session.queue(text=text)
        with self._at(port):
            self.flush()
        return self.session.sent

    def texts_until(self, count: int, deadline: float = 10, port: int | None = None) -> list[str]:
        """Poll until ``count`` text frames arrived (or fail at the deadline)."""
        got: list[str] = []
        end = time.monotonic() + deadline
        while len(got) < count:
            assert time.monotonic() < end, f"only {got} after {deadline}s"
            got += [m["text"] for m in self.poll(port) if "text" in m]
        return got


class ServeProcess:
    """``wsbridge serve <app>`` in tests/transport on a free port (the real shutdown path)."""

    def __init__(self, app: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wsbridge",
                "serve",
                app,
                "--port",
                "0",
                "--log-level",
                "warning",
            ],
            cwd=HERE,
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
                **(env or {}),
            },
        )
        line = self.proc.stdout.readline()  # blocks until it listens (or dies)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"wsbridge serve did not start: {line!r}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (a graceful shutdown); returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float = 10, interval: float = 0.05) -> Any:
    """Return condition()'s first truthy value; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
