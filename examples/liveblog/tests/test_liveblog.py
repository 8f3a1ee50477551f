"""The liveblog example, served for real: a post written through the site reaches every reader."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

from websockets.sync.client import connect


def publish(base_url: str, title: str, body: str) -> int:
    """Write a post through the site's own form (CSRF token and all)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(base_url + "/write/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "title": title, "body": body}
    ).encode()
    request = urllib.request.Request(
        base_url + "/write/", data=data, headers={"Referer": base_url + "/write/"}
    )
    return opener.open(request, timeout=10).status


def test_a_published_post_reaches_every_readers_page_at_once(example_server):
    server = example_server("liveblog", "liveblogsite", "LIVEBLOG_DB")
    origin = {"Origin": server.url}
    with (
        connect(server.ws_url + "/ws/liveblog/", additional_headers=origin) as reader1,
        connect(server.ws_url + "/ws/liveblog/", additional_headers=origin) as reader2,
    ):
        assert publish(server.url, "Kick-off", "The match has started.") == 200
        for reader in (reader1, reader2):
            event = json.loads(reader.recv(timeout=5))
            assert event["event"] == "created"
            assert event["post"]["title"] == "Kick-off"
    status, page = server.get("/")
    assert status == 200 and "Kick-off" in page and "/_wsbridge/wsbridge.js" in page


def test_an_invalid_post_is_not_broadcast(example_server):
    server = example_server("liveblog", "liveblogsite", "LIVEBLOG_DB")
    with connect(
        server.ws_url + "/ws/liveblog/", additional_headers={"Origin": server.url}
    ) as reader:
        assert publish(server.url, "", "no title") == 200  # the form is shown again with its error
        assert publish(server.url, "Second", "ok") == 200
        assert json.loads(reader.recv(timeout=5))["post"]["title"] == "Second"
