"""Build a connection scope from a WSGI environ.

Every transport (WebSocket, long-poll, HTTP consumers) describes its client
to the consumer with the same dict, built here from the WSGI ``environ``::

    scope = build_scope(environ, "websocket", transport="websocket")
    match = router.resolve("websocket", scope["path"])

The keys follow the ASGI connection scope where one exists (``path``,
``raw_path``, ``query_string``, lower-cased byte ``headers``, ``client``,
``server``, ``scheme``, ``subprotocols``) plus ``cookies`` (a ``str -> str``
dict, as Channels' middleware provides) and ``transport``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

__all__ = ["build_scope", "environ_headers", "header_name", "parse_cookies", "request_path"]

# Headers WSGI stores without the HTTP_ prefix.
_UNPREFIXED = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}

#: ``HTTP_X_FOO`` -> (``b"x-foo"``, ``"X-Foo"``) for the names seen so far: every
#: request of a site sends much the same ones. Bounded, as clients choose the names.
_NAMES: dict[str, tuple[bytes, str]] = {}
_MAX_NAMES = 512


def header_name(key: str) -> tuple[bytes, str]:
    """The header an environ key ``HTTP_...`` stands for: lower-case bytes, and titled."""
    try:
        return _NAMES[key]
    except KeyError:
        pass
    text = key[5:].replace("_", "-")
    names = (text.lower().encode("latin-1"), text.title())
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[key] = names
    return names


def environ_headers(environ: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request headers as ``[(lower-case name, value)]`` byte pairs.

    WSGI folds repeated headers into one comma-separated value and loses
    the original order; that is the best any WSGI server lets us see.
    """
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = header_name(key)[0]
        elif key in _UNPREFIXED:
            if not value:
                continue
            name = _UNPREFIXED[key]
        else:
            continue
        headers.append((name, str(value).encode("latin-1", "replace")))
    return headers


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently (a bad pair is skipped, never an error)."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.setdefault(name, value)
    return cookies


def request_path(environ: dict[str, Any]) -> str:
    """The decoded request path (``PATH_INFO`` re-read as UTF-8).

    WSGI hands ``PATH_INFO`` over as latin-1-decoded bytes (PEP 3333); URLs
    carry UTF-8, so the bytes are decoded again. Undecodable bytes become
    U+FFFD rather than an error: routing then simply finds nothing.
    """
    raw = environ.get("PATH_INFO", "") or "/"
    try:
        return raw.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that already decoded it as UTF-8
        return raw


def _raw_path(environ: dict[str, Any], path: str) -> bytes:
    # gunicorn gives RAW_URI, some servers REQUEST_URI: the path as sent.
    for key in ("RAW_URI", "REQUEST_URI"):
        uri = environ.get(key)
        if uri:
            return str(uri).split("?", 1)[0].encode("latin-1", "replace")
    return quote(path, safe="/:@!$&'()*+,;=").encode("ascii")


def _address(host: Any, port: Any) -> list[Any] | None:
    if not host:
        return None
    try:
        return [str(host), int(port)]
    except (TypeError, ValueError):
        return [str(host), 0]


def build_scope(
    environ: dict[str, Any], scope_type: str, *, transport: str | None = None
) -> dict[str, Any]:
    """Describe the client of one WSGI request as a connection scope.

    Args:
        environ: the WSGI environ of the request.
        scope_type: ``"websocket"`` or ``"http"``; it selects the scheme
            family (``ws``/``wss`` or ``http``/``https``).
        transport: what carries the connection (``"websocket"``,
            ``"longpoll"``, ``"http"``); defaults to ``scope_type``.

    Returns:
        A new scope dict. The caller adds ``url_route`` after routing.
    """
    path = request_path(environ)
    headers = environ_headers(environ)
    secure = environ.get("wsgi.url_scheme", "http") == "https"
    if scope_type == "websocket":
        scheme = "wss" if secure else "ws"
    else:
        scheme = "https" if secure else "http"
    offered = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    protocol = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1"))
    return {
        "type": scope_type,
        "transport": transport or scope_type,
        "http_version": protocol.partition("/")[2] or "1.1",
        "method": str(environ.get("REQUEST_METHOD", "GET")).upper(),
        "scheme": scheme,
        "path": path,
        "raw_path": _raw_path(environ, path),
        "root_path": environ.get("SCRIPT_NAME", ""),
        "query_string": str(environ.get("QUERY_STRING", "")).encode("latin-1", "replace"),
        "headers": headers,
        "cookies": parse_cookies(environ.get("HTTP_COOKIE", "")),
        "client": _address(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")),
        "server": _address(environ.get("SERVER_NAME"), environ.get("SERVER_PORT")),
        "subprotocols": [p.strip() for p in offered.split(",") if p.strip()],
        "url_route": {"args": (), "kwargs": {}},
    }
