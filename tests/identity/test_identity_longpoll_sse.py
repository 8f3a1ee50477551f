"""The same per-user sends and revocation on long-poll (410 + reason) and SSE."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time

import pytest

from tests.identity.conftest import get

pytestmark = pytest.mark.redis


def post(port: int, path: str, body: dict, cookie: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request(
        "POST", path, json.dumps(body), {"Content-Type": "application/json", "Cookie": cookie}
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def test_long_poll_gets_user_sends_and_ends_with_410_and_the_reason_when_revoked(pair):
    a, b = pair
    user = "lp" + secrets.token_hex(3)
    cookie = f"uid={user}"
    status, opened = post(b.port, "/_wsbridge/lp/open", {"path": "/ws/me/"}, cookie)
    assert status == 200, opened
    token = opened["token"]
    get(a, f"/send?user={user}&text=hi")
    status, answer = post(b.port, "/_wsbridge/lp/poll", {"token": token, "ack": 0}, cookie)
    assert [m.get("text") for m in answer["messages"]] == ["hi"]
    pending: dict = {}

    def poll() -> None:
        pending["answer"] = post(b.port, "/_wsbridge/lp/poll", {"token": token, "ack": 1}, cookie)
        pending["at"] = time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)  # the poll is parked on the owner
    t0 = time.monotonic()
    get(a, f"/revoke?user={user}&reason=logged+out")
    waiter.join(5)
    status, body = pending["answer"]
    assert status == 410 and "4403" in body["error"] and "logged out" in body["error"]
    assert pending["at"] - t0 < 1.0
    # and the session stays gone, with the reason
    status, body = post(b.port, "/_wsbridge/lp/poll", {"token": token, "ack": 1}, cookie)
    assert status in (403, 410)


def test_sse_stream_gets_user_sends_and_a_close_event_when_revoked(pair):
    a, b = pair
    user = "sse" + secrets.token_hex(3)
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    conn.request("GET", "/events/me/", headers={"Cookie": f"uid={user}"})
    response = conn.getresponse()
    assert response.status == 200  # the stream joined its user group before answering
    get(a, f"/send?user={user}&text=hello")
    get(a, f"/revoke?user={user}&reason=bye")
    text = b""
    deadline = time.monotonic() + 5
    while b"event: wsbridge.close" not in text and time.monotonic() < deadline:
        chunk = response.read1(4096) if hasattr(response, "read1") else response.read(1)
        if not chunk:
            break
        text += chunk
    assert b"data: hello" in text
    assert b"event: wsbridge.close" in text and b'"code": 4403' in text


def test_sse_and_long_poll_take_a_token_and_refuse_a_replayed_one(pair):
    a, b = pair
    user = "tk" + secrets.token_hex(3)
    token = get(a, f"/token?user={user}")
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    conn.request("GET", "/events/me/?access_token=" + token)
    response = conn.getresponse()
    assert response.status == 200
    get(a, f"/send?user={user}&text=via-token")
    seen, deadline = b"", time.monotonic() + 5
    while b"data: via-token" not in seen and time.monotonic() < deadline:
        seen += response.read1(4096)
    assert b"data: via-token" in seen
    conn.close()
    again = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    again.request("GET", "/events/me/?access_token=" + token)
    assert again.getresponse().status == 403  # replayed
    fresh = get(a, f"/token?user={user}")
    status, body = post(
        b.port, "/_wsbridge/lp/open", {"path": "/ws/me/?access_token=" + fresh}, cookie=""
    )
    assert status == 200, body
    status, body = post(
        a.port, "/_wsbridge/lp/open", {"path": "/ws/me/?access_token=" + fresh}, cookie=""
    )
    assert status == 403 and "replayed" in body["error"]
