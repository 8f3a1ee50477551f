"""Serve the browser client at ``/_wsbridge/wsbridge.js`` (and its ``.d.ts``).

The files live in ``wsbridge/static/wsbridge/`` (the Django app ships the
same folder to staticfiles). They are read once and answered with an ETag:
``Cache-Control: no-cache`` makes browsers revalidate (a cheap 304) so an
upgrade is picked up at once; a URL with ``?v=...`` (a fingerprint chosen by
the page) is cached for a year as immutable. ``wsbridge.js`` is an ES
module; fetched as a classic script it is answered without its ``export``
lines (:func:`wants_classic`), and then defines ``window.WSBridge``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["endpoints", "static_app", "wants_classic", "STATIC_DIR", "FILES"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "wsbridge"

#: file name -> Content-Type
FILES = {
    "wsbridge.js": "text/javascript; charset=utf-8",
    "wsbridge.d.ts": "application/typescript; charset=utf-8",
}


#: Lines ending with this marker are dropped when a classic script is asked for.
CLASSIC_STRIP = b"// @classic-strip"


def wants_classic(environ: dict[str, Any]) -> bool:
    """Is ``wsbridge.js`` being loaded by a classic ``<script>`` (no ``export`` allowed)?

    Module scripts are always fetched in CORS mode, classic ones (without a
    ``crossorigin`` attribute) in no-cors mode; ``?classic=1`` forces it.
    """
    if "classic=1" in environ.get("QUERY_STRING", ""):
        return True
    return (
        environ.get("HTTP_SEC_FETCH_DEST") == "script"
        and environ.get("HTTP_SEC_FETCH_MODE") == "no-cors"
    )


def _variants(name: str) -> dict[bool, tuple[bytes, str]]:
    source = (STATIC_DIR / name).read_bytes()
    lines = source.splitlines(keepends=True)
    classic = b"".join(line for line in lines if not line.rstrip().endswith(CLASSIC_STRIP))
    return {
        False: (source, '"m' + hashlib.sha256(source).hexdigest()[:32] + '"'),
        True: (classic, '"c' + hashlib.sha256(classic).hexdigest()[:32] + '"'),
    }


def static_app(name: str) -> Callable[..., list[bytes]]:
    """A WSGI app answering GET/HEAD for one file of :data:`STATIC_DIR`."""
    cache: dict[bool, tuple[bytes, str]] = {}
    strippable = name.endswith(".js")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if not cache:
            cache.update(_variants(name))
        body, etag = cache[strippable and wants_classic(environ)]
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
            ("Vary", "Sec-Fetch-Dest, Sec-Fetch-Mode"),
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
