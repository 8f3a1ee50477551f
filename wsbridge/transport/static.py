"""Serve the browser client at ``/_wsbridge/wsbridge.js`` (and its ``.d.ts``).

The files live in ``wsbridge/static/wsbridge/`` (the Django app ships the
same folder to staticfiles). They are read once and answered with an ETag:
``Cache-Control: no-cache`` makes browsers revalidate (a cheap 304) so an
upgrade is picked up at once; a URL with ``?v=...`` (a fingerprint chosen by
the page) is cached for a year as immutable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["endpoints", "static_app", "STATIC_DIR", "FILES"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "wsbridge"

#: file name -> Content-Type
FILES = {
    "wsbridge.js": "text/javascript; charset=utf-8",
    "wsbridge.d.ts": "application/typescript; charset=utf-8",
}


def static_app(name: str) -> Callable[..., list[bytes]]:
    """A WSGI app answering GET/HEAD for one file of :data:`STATIC_DIR`."""
    cache: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if "body" not in cache:
            body = (STATIC_DIR / name).read_bytes()
            cache["body"] = body
            cache["etag"] = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        body, etag = cache["body"], cache["etag"]
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")]
            )
            return [b""]
        if "v=" in environ.get("QUERY_STRING", ""):
            caching = "public, max-age=31536000, immutable"
        else:
            caching = "no-cache"
        headers = [
            ("Content-Type", FILES[name]),
            ("Cache-Control", caching),
            ("ETag", etag),
            ("X-Content-Type-Options", "nosniff"),
            ("Access-Control-Allow-Origin", "*"),  # a public file: module scripts need CORS
        ]
        if etag in environ.get("HTTP_IF_NONE_MATCH", ""):
            start_response("304 Not Modified", headers)
            return [b""]
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [b"" if method == "HEAD" else body]

    return app


def endpoints(app: Any) -> list[Any]:
    """Mount ``wsbridge.js`` and ``wsbridge.d.ts`` under the app's prefix (``wrap()`` calls it)."""
    from .wsgi import Endpoint

    return [Endpoint(app.prefix + name, static_app(name), exact=True) for name in FILES]
