"""What the HTTP transport reads of a request: its body (bounded while reading), its socket.

Shared by the HTTP consumers (:mod:`wsbridge.transport.http`) and long-poll,
which read bodies the same way: a declared ``Content-Length`` over the
limit is refused before a byte is read, a chunked body as soon as it passes
the limit, and a body that does not arrive in time gets 408.
"""

from __future__ import annotations

import socket
from typing import Any

from gevent import Timeout

from ..exceptions import BadRequest, HTTPError, PayloadTooLarge

__all__ = ["read_body", "client_socket", "SOCKET_KEYS"]

# environ keys under which servers show the client socket: wsbridge's pywsgi
# handler (a weak reference to itself), gunicorn's workers (the socket).
_HANDLER_KEY = "wsbridge.pywsgi_handler"
SOCKET_KEYS = ("wsbridge.socket", "gunicorn.socket")
_READ_SIZE = 65536


def read_body(environ: dict[str, Any], limit: int, timeout: float | None = None) -> bytes:
    """Read the whole request body, refusing it as soon as it passes ``limit`` bytes.

    Raises:
        PayloadTooLarge: the declared or received size exceeds ``limit`` (413).
        BadRequest: a malformed Content-Length, or the body ended early (400).
        HTTPError: status 408 when it did not arrive within ``timeout``.
    """
    declared = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    length: int | None = None
    if declared and not chunked:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from None
        if length < 0:
            raise BadRequest("Content-Length is negative")
        if length > limit:
            raise PayloadTooLarge(f"the body is {length} bytes; this URL takes at most {limit}")
        if length == 0:
            return b""
    elif not chunked:
        return b""
    stream = environ["wsgi.input"]
    timer = Timeout(timeout) if timeout else None
    if timer is not None:
        timer.start()
    try:
        return _read_stream(stream, length, limit)
    except Timeout as exc:
        if exc is not timer:
            raise
        raise HTTPError("the request body did not arrive in time", status=408) from None
    except (OSError, ValueError) as exc:
        # gevent raises IOError on EOF before Content-Length or inside a chunk,
        # ValueError subclasses on a malformed chunk header.
        raise BadRequest(f"the request body is truncated or malformed: {exc}") from None
    finally:
        if timer is not None:
            timer.close()


def _read_stream(stream: Any, length: int | None, limit: int) -> bytes:
    parts: list[bytes] = []
    received = 0
    while length is None or received < length:
        want = _READ_SIZE if length is None else min(_READ_SIZE, length - received)
        if length is None:
            want = min(want, limit + 1 - received)
        chunk = stream.read(want)
        if not chunk:
            if length is not None:
                raise BadRequest(f"the body ended after {received} of {length} bytes")
            break
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the body exceeds this URL's limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def client_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client's socket if the server shows it (``wsbridge serve``, gunicorn), else None.

    Without it a gone client is noticed only when a write fails.
    """
    ref = environ.get(_HANDLER_KEY)
    handler = ref() if callable(ref) else None
    sock: socket.socket | None = getattr(handler, "socket", None)
    if sock is not None:
        return sock
    for key in SOCKET_KEYS:
        found = environ.get(key)
        if found is not None and hasattr(found, "fileno"):
            sock = found
            return sock
    return None
