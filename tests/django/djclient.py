"""Small real clients for the server tests: HTTP with cookies, WebSocket, long-poll."""

from __future__ import annotations

import json
import urllib.request
from http.cookies import SimpleCookie
from typing import Any

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def http_get(url: str, cookie: str | None = None) -> tuple[int, str, dict[str, str]]:
    """GET ``url``; returns (status, body, cookies set by the response)."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        response = urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        response = exc
    jar = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return response.status, response.read().decode(), {k: m.value for k, m in jar.items()}


def login_cookie(base_url: str, username: str, password: str) -> str:
    """Log in through the site's own view; returns the ``Cookie`` header value to send."""
    status, body, cookies = http_get(f"{base_url}/login/?u={username}&p={password}")
    assert status == 200, body
    return f"sessionid={cookies['sessionid']}"


def ws_connect(url: str, *, cookie: str | None = None, origin: str | None = None, **kwargs: Any):
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    return connect(url, additional_headers=headers, open_timeout=10, close_timeout=5, **kwargs)


def ws_refusal(url: str, **kwargs: Any) -> int:
    """The HTTP status a refused handshake got (fails if it was accepted)."""
    try:
        ws = ws_connect(url, **kwargs)
    except InvalidStatus as exc:
        return exc.response.status_code
    ws.close()
    raise AssertionError(f"the handshake to {url} was accepted")


def lp_post(
    base_url: str,
    op: str,
    body: dict[str, Any],
    *,
    cookie: str | None = None,
    origin: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    request = urllib.request.Request(
        f"{base_url}/_wsbridge/lp/{op}",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        response = urllib.request.urlopen(request, timeout=40)
    except urllib.error.HTTPError as exc:
        response = exc
    return response.status, json.loads(response.read() or b"{}")
