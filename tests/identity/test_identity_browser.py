"""wsbridge.js with a token callback in headless Chromium: refresh in place, reconnect on 4511."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

from tests.conftest import start_wsbridge_serve

sys.path.insert(0, str(Path(__file__).parent.parent / "e2e"))

from cdp import Browser  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.redis]


@pytest.fixture(scope="module")
def short_tokens(tmp_path_factory):
    """Tokens live 2 s; the client refreshes at 0.8 of that."""
    layer = f"redis://127.0.0.1:6379/0?prefix=wsbridge-idb-{secrets.token_hex(4)}"
    env = {**os.environ, "ID_TEST_TTL": "2", "ID_TEST_LAYER": layer}
    served = start_wsbridge_serve(
        "tests.identity.id_app:application",
        tmp_path_factory.mktemp("idb"),
        "--layer",
        layer,
        env=env,
    )
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser():
    with Browser() as chromium:
        yield chromium


@pytest.mark.parametrize(
    "transport,where", [("websocket", "protocol"), ("websocket", "query"), ("longpoll", "body")]
)
def test_the_token_is_refreshed_without_reconnecting(browser, short_tokens, transport, where):
    user = "b" + secrets.token_hex(3)
    page = browser.new_page(short_tokens.url(f"/page?user={user}&transport={transport}&in={where}"))
    page.wait_for("events.includes('open:" + transport + "')")
    page.evaluate("bridge.send('whoami')")
    page.wait_for(f"received.includes('you are {user}')")
    # past three token lifetimes: refreshed in place, never closed
    page.wait_for("events.filter((e) => e === 'refreshed').length >= 3", timeout=15)
    assert page.evaluate("events")[0] == "open:" + transport
    assert not [e for e in page.evaluate("events") if e.startswith("close")]
    browser.close_pages()


def test_an_expired_token_closes_with_4511_and_the_client_fetches_a_new_one(browser, short_tokens):
    user = "e" + secrets.token_hex(3)
    # refreshAt > 1: the refresh comes too late, so the server closes at expiry
    page = browser.new_page(short_tokens.url(f"/page?user={user}"))
    page.wait_for("events.includes('open:websocket')")
    page.evaluate("bridge.options.refreshAt = 5; bridge._scheduleRefresh()")
    page.wait_for("events.includes('close:4511')", timeout=10)
    page.wait_for("events.filter((e) => e === 'open:websocket').length >= 2", timeout=10)
    assert page.evaluate("fetched") >= 2
    browser.close_pages()
