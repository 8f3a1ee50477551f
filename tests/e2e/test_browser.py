"""wsbridge.js in a real headless Chromium against real wsbridge servers."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "transport"))

from cdp import Browser  # noqa: E402
from lp_support import ServeProcess, Server, request  # noqa: E402
from proxy import RoundRobinProxy  # noqa: E402

pytestmark = [pytest.mark.browser]

OPEN = "window.bridge && bridge.readyState === 'open' && bridge.transport"


@pytest.fixture(scope="module")
def browser():
    with Browser() as chromium:
        yield chromium


@pytest.fixture(autouse=True)
def _close_tabs(browser):
    yield
    browser.close_pages()


def room() -> str:
    return "r" + secrets.token_hex(4)


def chat(pages, text: str, sender: int = 0) -> None:
    """Send from one page; every page must receive it."""
    pages[sender].evaluate(f"bridge.send({json.dumps(text)})")
    for page in pages:
        page.wait_for(f"received.includes({json.dumps(text)})")


def test_two_pages_chat_over_websocket(browser):
    server = Server()
    try:
        name = room()
        pages = [
            browser.new_page(f"http://127.0.0.1:{server.port}/page?room={name}") for _ in range(2)
        ]
        for page in pages:
            assert page.wait_for(OPEN) == "websocket"
        chat(pages, "hello from A", 0)
        chat(pages, "hello from B", 1)
        pages[1].evaluate("bridge.send(new Uint8Array([7, 8]))")
        pages[0].wait_for("received.includes('bytes:7,8')")
        # streams and JSON helpers share the connection
        pages[0].evaluate("bridge.stream('news').send({n: 1})")
        pages[1].wait_for('received.includes(\'{"stream":"news","payload":{"n":1}}\')')
        assert pages[0].evaluate("sessionStorage.getItem('wsbridge.transport')") is None
    finally:
        server.stop()


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
def test_final_close_codes_stop_reconnection_and_the_queue_is_bounded(browser, transport):
    server = Server(*(("--refuse-upgrades",) if transport == "longpoll" else ()))
    try:
        page = browser.new_page(
            f"http://127.0.0.1:{server.port}/page?path=/ws/echo/&early=q1,q2,q3,q4"
        )
        page.wait_for("window.bridge")
        # sent before the connection opened: 3 fit in the queue (queueSize), the 4th is refused
        assert page.evaluate("early") == [True, True, True, False]
        assert page.wait_for(OPEN) == transport
        page.wait_for("received.join() === 'q1,q2,q3'")
        page.evaluate("bridge.send('close:4001')")
        page.wait_for("bridge.readyState === 'closed'")
        assert page.evaluate("events") == ["open:" + transport, "close:4001"]
        assert page.evaluate("bridge.send('too late')") is False
    finally:
        server.stop()


def test_backoff_is_exponential_with_full_jitter(browser):
    server = Server()
    try:
        page = browser.new_page(f"http://127.0.0.1:{server.port}/page?path=/ws/echo/")
        page.wait_for(OPEN)
        # a second bridge to a closed port: every attempt fails, each one is logged
        page.evaluate("""(() => {
            window.delays = [];
            const dead = new bridge.constructor("/ws/echo/", {
                url: "http://127.0.0.1:9", minDelay: 40, maxDelay: 300,
                transports: ["websocket"], maxRetries: 6});
            dead.on("reconnecting", (e) => delays.push([e.attempt, e.delay]));
        })()""")
        delays = page.wait_for("delays.length >= 6 && delays", timeout=20)
        assert [attempt for attempt, _ in delays] == [1, 2, 3, 4, 5, 6]
        for attempt, delay in delays:
            assert 0 <= delay < min(300, 40 * 2 ** (attempt - 1))
        # loaded as a module, the client leaves no globals behind
        assert page.evaluate("typeof WSBridge + typeof __wsbridge_exports") == "undefinedundefined"
        codes = page.evaluate(
            "[1000, 1001, 1006, 1008, 1009, 1011, 4000, 4499, 4500]"
            ".map((c) => bridge.constructor.shouldReconnect(c))"
        )
        assert codes == [False, True, True, False, False, True, False, False, True]
    finally:
        server.stop()


def test_without_websockets_the_pages_fall_back_to_long_poll_and_remember_it(browser):
    # One page has no WebSocket at all (classic script tag); the server refuses upgrades
    # for the other, as a proxy that blocks them would.
    server = Server("--refuse-upgrades")
    try:
        name = room()
        base = f"http://127.0.0.1:{server.port}/page?room={name}"
        pages = [browser.new_page(base + "&nows=1&classic=1"), browser.new_page(base)]
        for page in pages:
            assert page.wait_for(OPEN) == "longpoll"
        assert pages[0].evaluate("typeof window.WebSocket") == "undefined"
        assert pages[1].evaluate("sessionStorage.getItem('wsbridge.transport')") == "longpoll"
        chat(pages, "over long-poll", 0)
        chat(pages, "and back", 1)
        pages[1].evaluate("bridge.send(new Uint8Array([1, 2, 3]))")
        pages[0].wait_for("received.includes('bytes:1,2,3')")
        pages[1].evaluate("bridge.sendJSON({json: true})")
        pages[0].wait_for("received.includes('{\"json\":true}')")
        chat(pages, "after binary", 1)
    finally:
        server.stop()


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
def test_the_page_reconnects_after_a_server_restart_and_continues(browser, transport):
    # long-poll retries a failed poll until the session would expire: keep that short
    extra = ("--refuse-upgrades", "--session-timeout", "3") if transport == "longpoll" else ()
    server = Server(*extra)
    port = server.port
    try:
        name = room()
        pages = [browser.new_page(f"http://127.0.0.1:{port}/page?room={name}") for _ in range(2)]
        for page in pages:
            page.wait_for(OPEN)
        chat(pages, "before restart")
        server.stop()
        for page in pages:
            page.wait_for("events.includes('reconnecting')")
        # queued while the server is down, delivered once it is back
        pages[0].evaluate("bridge.send('queued while down')")
        server = Server("--port", str(port), *extra)
        for page in pages:
            assert page.wait_for(OPEN, timeout=20) == transport
        # the sender's own consumer joined the room before handling the message
        pages[0].wait_for("received.includes('queued while down')", timeout=20)
        chat(pages, "after restart", 1)
        events = pages[0].evaluate("events")
        assert events[0] == events[-1] == "open:" + transport
        assert "close:1006" in events or "close:1001" in events
    finally:
        server.stop()


def test_long_poll_served_by_two_processes(browser):
    prefix = "wsbridge-e2e-" + secrets.token_hex(4)
    args = ("--layer", "redis", "--redis-prefix", prefix, "--secret", "e2e-secret-0123456789")
    servers = [Server(*args), Server(*args)]
    proxy = RoundRobinProxy([s.port for s in servers])
    try:
        name = room()
        pages = [
            browser.new_page(f"http://127.0.0.1:{proxy.port}/page?room={name}") for _ in range(2)
        ]
        for page in pages:
            assert page.wait_for(OPEN, timeout=20) == "longpoll"
        for i in range(4):
            chat(pages, f"message {i}", i % 2)
        for s in servers:
            assert proxy.served[(s.port, "/_wsbridge/lp/poll")] >= 2
            assert proxy.served[(s.port, "/_wsbridge/lp/send")] >= 1
        pids = {request(s.port, "/pid", method="GET")[1]["pid"] for s in servers}
        assert len(pids) == 2
    finally:
        proxy.close()
        for s in servers:
            s.stop()


def test_a_long_poll_page_keeps_its_session_across_a_restart_behind_the_proxy(browser):
    # Two processes on Redis behind a round-robin proxy (no WebSockets through it). One
    # gets SIGTERM: its sessions move to the other, and the pages see no close at all.
    env = {
        "LP_REDIS_PREFIX": "wsbridge-e2e-" + secrets.token_hex(4),
        "WSBRIDGE_SECRET": "e2e-secret-0123456789",
        "LP_POLL_TIMEOUT": "10",
        "LP_SESSION_TIMEOUT": "20",
    }
    servers = [ServeProcess("lp_gunicorn_app:application", env) for _ in range(2)]
    proxy = RoundRobinProxy([s.port for s in servers])
    try:
        name = room()
        pages = []
        while len(pages) < 2 or held_by(servers[0]) == 0:  # at least one session on the first
            assert len(pages) < 6, "the proxy never sent an open to the first process"
            page = browser.new_page(f"http://127.0.0.1:{proxy.port}/page?room={name}")
            assert page.wait_for(OPEN, timeout=20) == "longpoll"
            pages.append(page)
        chat(pages, "before restart", 0)
        assert servers[0].terminate() == 0
        chat(pages, "after restart", 1)
        chat(pages, "and on", 0)
        for page in pages:
            assert page.evaluate("events") == ["open:longpoll"]  # no close, no reconnecting
            assert page.evaluate("received") == ["before restart", "after restart", "and on"]
        resumed = [
            e
            for e in request(servers[1].port, "/log", method="GET")[1]
            if e["event"] == "connect" and e["resumed"]
        ]
        assert resumed  # the survivor adopted the sessions the stopped process held
        assert held_by(servers[1]) == len(pages)
    finally:
        proxy.close()
        for s in servers:
            s.stop()


def test_a_deploy_with_history_loses_and_repeats_nothing_while_messages_keep_coming(browser):
    # As above, with the room a history group and a publisher sending all along,
    # also while the first process hands its sessions over (SIGTERM): the pages
    # end with every message exactly once, in the order of the room's history.
    prefix = "wsbridge-e2e-" + secrets.token_hex(4)
    env = {
        "LP_REDIS_PREFIX": prefix,
        "WSBRIDGE_SECRET": "e2e-secret-0123456789",
        "LP_POLL_TIMEOUT": "10",
        "LP_SESSION_TIMEOUT": "20",
        "LP_HISTORY": "chat.*",
    }
    servers = [ServeProcess("lp_gunicorn_app:application", env) for _ in range(2)]
    proxy = RoundRobinProxy([s.port for s in servers])
    try:
        name = room()
        pages = []
        while len(pages) < 2 or held_by(servers[0]) == 0:
            assert len(pages) < 6, "the proxy never sent an open to the first process"
            page = browser.new_page(f"http://127.0.0.1:{proxy.port}/page?room={name}")
            assert page.wait_for(OPEN, timeout=20) == "longpoll"
            pages.append(page)
        stopped = []
        for i in range(40):
            request(servers[1].port, f"/broadcast?group=chat.{name}&text=n{i}", method="GET")
            if i == 10:
                stopped.append(servers[0].terminate())
        assert stopped == [0]
        for page in pages:
            page.wait_for("received.includes('n39')", timeout=30)
        from wsbridge.layers.redis import RedisLayer

        layer = RedisLayer(
            hosts=["redis://127.0.0.1:6379/0"], prefix=prefix, groups={"chat.*": {"history": 500}}
        )
        try:
            published = [m["text"] for m in layer.history(f"chat.{name}").messages]
        finally:
            layer.close()
        assert published == [f"n{i}" for i in range(40)]
        for page in pages:
            assert page.evaluate("received") == published
    finally:
        proxy.close()
        for s in servers:
            s.stop()


def held_by(server: ServeProcess) -> int:
    return request(server.port, "/_wsbridge/test-sessions", method="GET")[1]
