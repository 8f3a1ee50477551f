"""The chat example in headless Chromium: nothing lost, nobody wrongly online, across kill -9.

Two pages in one room on the Redis layer; one page keeps sending while the
server (or, with two processes, the one the sender is on) is killed with
SIGKILL and started again on the same port. Both pages must end with every
published message exactly once, in order (the room's Redis history is the
record of what was published), and with an online list of exactly the two
pages (the dead process's entries go when its presence lease runs out).
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import gevent
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from cdp import Browser  # noqa: E402

from wsbridge.layers.redis import RedisLayer  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.redis]

REDIS = "redis://127.0.0.1:6379/0"
GROUPS = {"chat_*": {"history": 200, "history_ttl": 3600, "presence": True}}
LEASE = 2.0
COUNT = 60
OPEN = "typeof bridge !== 'undefined' && bridge.readyState === 'open' && bridge.transport"


@pytest.fixture(scope="module")
def browser():
    with Browser() as chromium:
        yield chromium


@pytest.fixture
def prefix():
    name = "wsbchat" + secrets.token_hex(4)
    yield name
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


def send(page, text: str) -> None:
    # Driven from here: a background tab's timers are throttled to once a second.
    page.evaluate(
        f"(window.sent = window.sent || []).push({text!r}), bridge.sendJSON({{message: {text!r}}})"
    )


@pytest.mark.parametrize(
    ("transport", "processes"),
    [("websocket", 1), ("longpoll", 1), ("websocket", 2), ("longpoll", 2)],
)
def test_kill_9_and_restart_while_a_page_sends_loses_and_repeats_nothing(
    example_server, browser, prefix, transport, processes
):
    env = {"CHAT_REDIS": REDIS, "CHAT_REDIS_PREFIX": prefix, "CHAT_PRESENCE_LEASE": str(LEASE)}
    servers = [example_server("chat", "chatsite", "CHAT_DB", **env) for _ in range(processes)]
    room = "r" + secrets.token_hex(3)
    query = f"?transport={transport}"
    # The reader is on the process that dies; with two processes the sender is not.
    reader = browser.new_page(f"{servers[0].url}/chat/{room}/{query}")
    sender = browser.new_page(f"{servers[-1].url}/chat/{room}/{query}")
    for page in (sender, reader):
        assert page.wait_for(OPEN, timeout=20) == transport
        page.wait_for("online.size === 2", timeout=20)
    # The reader comes back about 3 s after the crash (its backoff's jitter pinned),
    # well after the sender: what was published meanwhile must be recovered.
    reader.evaluate("Math.random = () => 0.99; bridge.options.minDelay = 3000")

    victim = servers[0]
    restart = None
    for i in range(COUNT):
        send(sender, f"m{i}")
        gevent.sleep(0.08)
        if i == 15:
            victim.kill()  # the sender goes on sending while it is down and coming back
            restart = gevent.spawn(victim.start, port=victim.port)
    assert restart is not None
    restart.get(timeout=60)

    for page in (sender, reader):
        page.wait_for(f"chatMessages.includes('m{COUNT - 1}')", timeout=40)
    layer = RedisLayer(hosts=[REDIS], prefix=prefix, groups=GROUPS)
    try:
        published = [m["message"] for m in layer.history(f"chat_{room}").messages]
    finally:
        layer.close()
    sent = sender.evaluate("sent")
    lost_in_flight = [text for text in sent if text not in published]
    for page in (sender, reader):
        assert page.evaluate("chatMessages") == published  # each once, in order
    assert published == [text for text in sent if text in published]
    # Only what was on the wire to the process as it died can be lost (the
    # client's send, not the recovery); say how much it was.
    assert len(lost_in_flight) <= 5, lost_in_flight
    for page in (sender, reader):
        try:
            page.wait_for("online.size === 2", timeout=LEASE * 3 + 10)
        except AssertionError as exc:  # who is shown, and the seq of each join/leave applied
            shown = page.evaluate("JSON.stringify([[...online.entries()], [...lastSeq]])")
            raise AssertionError(f"{exc}; online and last seqs: {shown}") from None
        names = page.evaluate("[...online.values()].map(p => p.name)")
        assert len(set(names)) == 2
    print(
        json.dumps(
            {
                "transport": transport,
                "processes": processes,
                "published": len(published),
                "lost_in_flight": lost_in_flight,
            }
        )
    )
