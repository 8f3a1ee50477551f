"""Server-Sent Events in a real EventSource (headless Debian Chromium, driven over CDP).

The server is ``wsbridge serve tests.e2e.sse_app:application`` in its own
process on a free loopback port (tests/conftest.py starts it); the test
publishes through HTTP consumers of that site.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Served, start_wsbridge_serve

sys.path.insert(0, str(Path(__file__).parent))

from cdp import Browser  # noqa: E402

pytestmark = [pytest.mark.browser]


class Site:
    """The served site, and how the test publishes through its HTTP consumers."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.port = served.port

    def post(self, path: str, payload: dict | None = None) -> str:
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.served.url(path), data=data)
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.read().decode()

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.served.url(path), timeout=10) as response:
            return response.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    served = start_wsbridge_serve(
        "tests.e2e.sse_app:application", tmp_path_factory.mktemp("sse"), "--log-level", "warning"
    )
    try:
        yield Site(served)
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as chromium:
        yield chromium


def test_event_source_gets_events_and_resumes_with_last_event_id(server, browser) -> None:
    page = browser.new_page(f"http://127.0.0.1:{server.port}/")
    page.wait_for("typeof window.connect === 'function'")
    page.evaluate("window.source = connect('/events/news/'); true")
    page.wait_for("window.opens === 1 && window.source.readyState === 1")

    server.post("/publish/news/", {"data": "first line\nsecond line", "id": "7"})
    server.post("/publish/news/", {"data": "careful", "id": "8", "event": "alert"})
    page.wait_for("window.events.length === 2")
    assert page.evaluate("window.events") == [
        {"type": "message", "data": "first line\nsecond line", "id": "7"},
        {"type": "alert", "data": "careful", "id": "8"},
    ]

    # the server ends the stream: the browser reconnects by itself, sending Last-Event-ID
    server.post("/drop/news/")
    page.wait_for("window.opens === 2", timeout=10)
    page.wait_for("window.events.length === 3")
    assert page.evaluate("window.events[2]") == {"type": "resume", "data": "after 8", "id": "8"}
    assert json.loads(server.get("/seen/")) == ["8"]

    server.post("/publish/news/", {"data": "after the reconnect", "id": "9"})
    page.wait_for("window.events.length === 4")
    assert page.evaluate("window.events[3]") == {
        "type": "message",
        "data": "after the reconnect",
        "id": "9",
    }
    page.evaluate("window.source.close(); true")
    assert page.errors == []


def test_event_source_stops_on_204(server, browser) -> None:
    page = browser.new_page(f"http://127.0.0.1:{server.port}/")
    page.wait_for("typeof window.connect === 'function'")
    page.evaluate("window.source = connect('/events/news/?stop=1'); true")
    # 204 closes the EventSource for good (readyState CLOSED, no reconnection)
    page.wait_for("window.errors === 1 && window.source.readyState === 2")
    assert page.evaluate("window.opens") == 0
