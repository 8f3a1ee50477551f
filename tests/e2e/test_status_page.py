"""The live status page in headless Chromium: two processes on Redis, groups, rates, drops."""

from __future__ import annotations

import base64
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import server_env

sys.path.insert(0, str(Path(__file__).parent))

from cdp import Browser  # noqa: E402
from png import decode, pixels  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.redis]

APP = "tests.e2e.status_app:application"
TOKEN = "st-" + secrets.token_hex(8)


def test_status_page_shows_both_processes_groups_rates_and_drops_live(wsbridge_serve, tmp_path):
    prefix = f"wsbsp{secrets.token_hex(4)}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    env = server_env(WSBRIDGE_LAYER=url, WSBRIDGE_TEST_STATUS_TOKEN=TOKEN)
    one, two = wsbridge_serve(APP, env=env), wsbridge_serve(APP, env=env)
    # Nobody without the token: neither the page nor its WebSocket.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(one.url("/_wsbridge/status"), timeout=10)
    assert refused.value.code == 401
    with pytest.raises(InvalidStatus) as denied, connect(one.ws_url("/_wsbridge/status/ws")):
        pass
    assert denied.value.response.status_code == 403

    from wsbridge.layers.urls import layer_from_urls

    layer = layer_from_urls([url])
    members = [
        connect(one.ws_url("/room/")),
        connect(one.ws_url("/room/")),
        connect(two.ws_url("/room/")),
    ]
    slow = connect(one.ws_url("/slow/"))
    try:
        channel = slow.recv(timeout=5)
        slow.send("block")  # its handler sleeps 4 s: its mailbox (100) overflows
        time.sleep(0.3)
        for i in range(130):
            try:
                layer.send(channel, {"type": "test.message", "n": i})
            except Exception:  # noqa: BLE001 - the layer may refuse once the queue is full
                pass
        with Browser() as browser:
            page = browser.new_page(one.url(f"/_wsbridge/status?token={TOKEN}"))
            page.wait_for("window.statusUpdates >= 1", timeout=20)
            for _ in range(30):  # traffic during the page's ticks: a rate above 0
                for ws in members:
                    ws.send("hi")
                    ws.recv(timeout=5)
                time.sleep(0.05)
            expected = sorted([one.pid, two.pid])
            page.wait_for(
                "window.lastStatus && lastStatus.processes.length === 2 && "
                "lastStatus.groups[Object.keys(lastStatus.groups).find(g => g.endsWith('lobby'))]"
                " === 3 && (lastStatus.drops.mailbox_full || 0) > 0 && "
                "lastStatus.processes.some(p => p.rates.sent_per_s > 0) && "
                "lastStatus.processes.every(p => (p.gauges || {}).websockets >= 1)",
                timeout=25,
            )
            status = page.evaluate("lastStatus")
            assert sorted(p["pid"] for p in status["processes"]) == expected
            text = page.evaluate("document.body.innerText")
            assert "lobby" in text and "mailbox_full" in text and "live" in text
            assert f":{one.pid}" in text and f":{two.pid}" in text
            shot = base64.b64decode(page.call("Page.captureScreenshot", {"format": "png"})["data"])
            (tmp_path / "status.png").write_bytes(shot)
            box = page.evaluate(
                "(() => { const r = document.querySelector('#processes')"
                ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height].map(Math.round)"
                "})()"
            )
            badge = page.evaluate(
                "(() => { const r = document.querySelector('#state')"
                ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height].map(Math.round)"
                "})()"
            )
            assert not page.errors, page.errors
    finally:
        for ws in [*members, slow]:
            ws.close()
        layer.close()
    width, height, rows = decode(shot)
    assert width >= 400 and height >= 300
    table = pixels(rows, tuple(box))
    # The processes table was drawn: its header's fill and dark text glyphs are there.
    assert table.count((0xE8, 0xEE, 0xF7)) > 500, "no table header in the screenshot"
    assert sum(1 for r, g, b in table if r + g + b < 200) > 200, "no text in the table"
    everything = pixels(rows, (0, 0, width, height))
    # The drop counts are red, the "live" badge is green.
    assert sum(1 for r, g, b in everything if r > 140 and g < 70 and b < 90) > 20
    assert pixels(rows, tuple(badge)).count((0x2E, 0x7D, 0x32)) > 100
