"""Helpers for the long-poll tests: start lp_server.py processes, speak the protocol."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class Client:
    """A minimal, exact long-poll client (what wsbridge.js does, in Python)."""

    def __init__(self, port: int, path: str, *, origin: str | None = None) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        if origin:
            self.headers["Origin"] = origin
        status, body = request(port, LP + "/open", {"path": path}, headers=self.headers)
        assert status == 200, (status, body)
        self.token = body["token"]
        self.open_answer = body
        self.seen = 0
        self.sent = 0
        self.closed: tuple[int, str] | None = None

    @classmethod
    def from_token(cls, port: int, token: str) -> Client:
        """A client for a session opened by hand (custom open body or headers)."""
        client = cls.__new__(cls)
        client.port, client.headers, client.token = port, {}, token
        client.seen, client.sent, client.closed = 0, 0, None
        return client

    def call(self, op: str, port: int | None = None, **fields: Any) -> tuple[int, Any]:
        return request(port or self.port, f"{LP}/{op}", {"token": self.token, **fields},
                       headers=self.headers)

    def poll(self, port: int | None = None) -> list[dict]:
        """One poll; returns the new frames (seq > seen) and advances ``seen``."""
        status, body = self.call("poll", port, ack=self.seen)
        assert status == 200, (status, body)
        fresh = [m for m in body["messages"] if m["seq"] > self.seen]
        for m in fresh:
            assert m["seq"] == self.seen + 1, (self.seen, body)
            self.seen = m["seq"]
            if "close" in m:
                self.closed = (m["close"], m["reason"])
        return fresh

    def send(self, *texts: str, port: int | None = None) -> int:
        messages = [{"seq": self.sent + 1 + i, "text": t} for i, t in enumerate(texts)]
        status, body = self.call("send", port, messages=messages)
        assert status == 200, (status, body)
        self.sent += len(texts)
        return body["ack"]

    def texts_until(self, count: int, deadline: float = 10, port: int | None = None) -> list[str]:
        """Poll until ``count`` text frames arrived (or fail at the deadline)."""
        got: list[str] = []
        end = time.monotonic() + deadline
        while len(got) < count:
            assert time.monotonic() < end, f"only {got} after {deadline}s"
            got += [m["text"] for m in self.poll(port) if "text" in m]
        return got


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
