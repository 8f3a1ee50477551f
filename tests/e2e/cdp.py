"""Drive Debian's headless Chromium over the Chrome DevTools Protocol (no webdriver, no download).

with Browser() as browser:
    page = browser.new_page("http://127.0.0.1:8000/page")
    page.wait_for("window.bridge && bridge.readyState === 'open'")
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]


class Browser:
    """One headless Chromium with its own throw-away profile."""

    def __init__(self, timeout: float = 30) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise RuntimeError("chromium is missing: run tests/services.sh (apt-get)")
        self.profile = tempfile.mkdtemp(prefix="wsbridge-chromium-")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        active = Path(self.profile) / "DevToolsActivePort"
        end = time.monotonic() + timeout
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(active.read_text().splitlines()[0])
        self.pages: list[Page] = []

    def _json(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def new_page(self, url: str) -> Page:
        """Open ``url`` in a new tab and return its driver (the load is not awaited)."""
        target = self._json("/json/new?" + urllib.parse.quote(url, safe=""), method="PUT")
        page = Page(target["webSocketDebuggerUrl"], target["id"])
        self.pages.append(page)
        return page

    def close_pages(self) -> None:
        """Close every tab opened so far (so none keeps reconnecting to a later test's port)."""
        for page in self.pages:
            page.close()
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/json/close/{page.target_id}", timeout=5
                ).read()
            except OSError:  # already gone
                pass
        self.pages.clear()

    def close(self) -> None:
        for page in self.pages:
            page.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: evaluate JavaScript, wait for conditions."""

    def __init__(self, ws_url: str, target_id: str) -> None:
        self.target_id = target_id
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=None, open_timeout=10))
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        self.call("Runtime.enable")

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15) -> Any:
        """Send one CDP command and return its result (events met meanwhile are kept if errors)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        end = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(timeout=max(0.01, end - time.monotonic()))
            message = json.loads(raw)
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or str(details))

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15, interval: float = 0.05) -> Any:
        """Evaluate until truthy; fail with the page's state after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # e.g. the page is still loading
            if value:
                return value
            if time.monotonic() > end:
                state = self.evaluate(
                    "JSON.stringify({events: window.events, received: window.received})"
                )
                raise AssertionError(
                    f"{expression!r} not true within {timeout}s; page: {state}; "
                    f"errors: {self.errors}"
                )
            time.sleep(interval)

    def close(self) -> None:
        try:
            self._stack.close()
        except Exception:  # the browser may be gone already
            pass
