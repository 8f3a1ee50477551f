"""wrap() serves wsbridge.js and wsbridge.d.ts at fixed paths, with caching headers."""

from __future__ import annotations

import http.client

import pytest
from lp_support import Server

from wsbridge.transport.static import STATIC_DIR


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    srv.stop()


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_the_module_is_served_with_its_type_and_an_etag(server):
    status, headers, body = get(
        server.port,
        "/_wsbridge/wsbridge.js",
        {"Sec-Fetch-Dest": "script", "Sec-Fetch-Mode": "cors"},
    )
    assert status == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert body == (STATIC_DIR / "wsbridge.js").read_bytes()
    assert b"export { WSBridge, connect }" in body
    status, _, body = get(server.port, "/_wsbridge/wsbridge.js", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""


def test_a_classic_script_gets_the_file_without_export_lines(server):
    for headers, path in (
        ({"Sec-Fetch-Dest": "script", "Sec-Fetch-Mode": "no-cors"}, ""),
        ({}, "?classic=1"),
    ):
        status, answer, body = get(server.port, "/_wsbridge/wsbridge.js" + path, headers)
        code = body.split(b"*/", 1)[1]
        assert status == 200 and b"export {" not in code and b"export default" not in code
        assert b"root.WSBridge = WSBridge" in body
        assert "sec-fetch-mode" in answer["vary"].lower()


def test_fingerprinted_urls_are_immutable_and_types_are_served(server):
    status, headers, _ = get(server.port, "/_wsbridge/wsbridge.js?v=0.1.0")
    assert status == 200 and "immutable" in headers["cache-control"]
    status, headers, body = get(server.port, "/_wsbridge/wsbridge.d.ts")
    assert status == 200 and b"export declare class WSBridge" in body
    status, _, body = get(server.port, "/_wsbridge/wsbridge.js", method="HEAD")
    assert status == 200 and body == b""
    assert get(server.port, "/_wsbridge/wsbridge.js", method="DELETE")[0] == 405
