"""The WebSocket opening handshake: the request, the answer, and its counting.

The WSGI server has parsed the upgrade request already, so websockets checks
a :class:`Request` rebuilt from the environ (:func:`request_from_environ`).
A valid one is checked and negotiated by one ``ServerProtocol`` shared by
every handshake, which is never connected (:func:`negotiate`); the 101 is
built from its result, and frames go to a protocol of the connection's own
that starts OPEN with what was negotiated (:func:`open_protocol`). Only an
invalid request or a refusal gets a handshake protocol of its own
(:func:`handshake_protocol`), which writes websockets' answer.

What the consumer decided reaches the transport as a connection-contract
output (:mod:`wsbridge.protocol.connection`): an ``Opened`` becomes the 101
answer (:func:`accept_response`), a ``Refused`` the HTTP status it names,
with the body in :data:`REFUSAL_TEXT`.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from dataclasses import fields
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .. import metrics as _metrics
from ..identity import BEARER_SUBPROTOCOL
from ..protocol.connection import Opened
from .scope import header_name
from .wsoptions import WebSocketOptions

__all__ = [
    "REFUSAL_TEXT",
    "REFUSED",
    "accept_response",
    "count_handshake",
    "handshake_protocol",
    "negotiate",
    "open_protocol",
    "shared_negotiator",
    "refuse_non_get",
    "request_from_environ",
]

logger = logging.getLogger("wsbridge.websocket")

REFUSED = "The WebSocket connection was refused."
#: The body of a handshake refused with each status (the contract chooses the status).
REFUSAL_TEXT = {
    403: REFUSED,
    500: "The WebSocket consumer failed.",
    503: "The server is shutting down.",
}
_REFUSAL_REASONS = {403: "consumer", 500: "consumer_error", 503: "shutting_down"}


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every open/close at INFO; one line per connection is debug here."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_PROTOCOL_LOGGER = _QuietLogger(logging.getLogger("wsbridge.websocket.protocol"), {})


class _Protocol(ServerProtocol):
    """ServerProtocol that lets a Close frame end an unfinished fragmented message.

    RFC 6455 section 5.4 allows control frames between fragments; a Close
    there means the peer is leaving, so the closing handshake completes
    normally (echoing its code) and the partial message is dropped, where
    websockets would fail the connection with 1002 (Autobahn case 7.1.5).
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None
        super().recv_frame(frame)


def handshake_protocol(options: WebSocketOptions) -> ServerProtocol:
    """The protocol that answers the opening handshake."""
    return ServerProtocol(
        extensions=options.extensions(),
        max_size=(options.max_message_size, options.max_fragment_size),
        logger=_PROTOCOL_LOGGER,
    )


def shared_negotiator(options: WebSocketOptions) -> ServerProtocol:
    """The handshake protocol, never connected, that checks upgrade requests made with
    ``options`` in this gevent hub (thread), for :func:`negotiate`.

    It stands for "not answered yet" (CONNECTING) until a connection has a
    protocol of its own. One per hub: a negotiation sets its ``extensions``,
    read right after, which another thread must not change in between.
    """
    from gevent import get_hub

    hub = get_hub()
    cache = options._negotiators  # kept on the options object, not here: it goes with them
    found = cache.get(hub)
    if found is None:
        found = cache[hub] = handshake_protocol(options)
    return found


def negotiate(negotiator: ServerProtocol, request: Request) -> tuple[Response, list[Any]] | None:
    """The 101 answer to a valid upgrade request and the extensions it agreed on.

    ``negotiator`` is :func:`shared_negotiator`'s. None when the request is
    not a valid upgrade: answer it with ``handshake_protocol(options).accept(
    request)``, which says why.

    websockets' own ``process_request`` does every check and the extension
    negotiation on a protocol that only this does: a connection's handshake
    then costs no protocol of its own (its parser, its buffers, an id),
    which is most of what a 101 cost here.
    """
    try:
        accept, extensions_header, _ = negotiator.process_request(request)
    except Exception:
        return None
    # process_request sets these on the negotiator: taken at once (nothing yields).
    extensions = negotiator.extensions
    negotiator.extensions = []
    headers = Headers()
    headers["Date"] = http_date()
    headers["Upgrade"] = "websocket"
    headers["Connection"] = "Upgrade"
    headers["Sec-WebSocket-Accept"] = accept
    if extensions_header is not None:
        headers["Sec-WebSocket-Extensions"] = extensions_header
    return Response(101, "Switching Protocols", headers), extensions


_date: list[Any] = [0, ""]


def http_date() -> str:
    """The Date header's value now (RFC 9110 5.6.7), formatted once per second."""
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return str(_date[1])


def open_protocol(
    options: WebSocketOptions, extensions: list[Any], subprotocol: Subprotocol | None
) -> ServerProtocol:
    """The protocol that carries the frames, OPEN with what the handshake negotiated."""
    protocol = _Protocol(
        state=OPEN,
        max_size=(options.max_message_size, options.max_fragment_size),
        logger=_PROTOCOL_LOGGER,
    )
    protocol.extensions = extensions
    protocol.subprotocol = subprotocol
    return protocol


def request_from_environ(environ: dict[str, Any]) -> Request:
    """The upgrade request as websockets sees it, from the WSGI environ.

    Raises:
        websockets.exceptions.InvalidHeader: a header value holds a control
            character (NUL, CR...); answer 400.
    """
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name, text = header_name(key)[1], str(value)
            if not _REQUEST_HAS_METHOD and _CONTROL.search(text):
                # websockets 17+ refuses these itself; 16 (the oldest allowed) does not.
                raise InvalidHeader(name, text)
            headers[name] = text
    path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
    query = environ.get("QUERY_STRING")
    if query and "?" not in path:
        path = f"{path}?{query}"
    if not _REQUEST_HAS_METHOD:
        return Request(path=str(path), headers=headers)
    return Request(
        path=str(path),
        headers=headers,
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        protocol=str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).upper(),
    )


# websockets 16 (the newest on Python 3.10) has no Request.method: its
# ServerProtocol then checks no method, so the transport refuses a non-GET itself.
_REQUEST_HAS_METHOD = "method" in {f.name for f in fields(Request)}


#: Control characters a header value may not hold (RFC 9110 5.5; HTAB is allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def refuse_non_get(environ: dict[str, Any], protocol: ServerProtocol) -> Response | None:
    """Under websockets 16, what 17+ refuses itself: a non-GET upgrade (405, Allow: GET)
    and one over another HTTP version than 1.1 (505); None otherwise."""
    if _REQUEST_HAS_METHOD:
        return None
    version = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).upper()
    if version != "HTTP/1.1":
        return protocol.reject(505, f"Failed to open a WebSocket connection: {version}.\n")
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    if method == "GET":
        return None
    response = protocol.reject(405, f"Failed to open a WebSocket connection: {method}.\n")
    response.headers["Allow"] = "GET"
    return response


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def accept_response(
    protocol: ServerProtocol, response: Response, opened: Opened, scope: dict[str, Any]
) -> Response:
    """The 101 answer for ``opened`` (its subprotocol and headers), or a 500 refusal.

    A subprotocol the client did not offer is the consumer's bug: 500, logged.
    The subprotocol chosen is the answer's ``Sec-WebSocket-Protocol`` header
    (``protocol`` only builds the refusal; it may be shared, so it is not changed).
    """
    subprotocol = opened.subprotocol
    if (
        not subprotocol
        and scope.get("wsbridge.token_subprotocol")
        and BEARER_SUBPROTOCOL in scope.get("subprotocols", ())
    ):
        # The token came as a subprotocol: browsers need one selected back.
        subprotocol = BEARER_SUBPROTOCOL
    if subprotocol:
        if subprotocol not in scope.get("subprotocols", ()):
            logger.error(
                "consumer for %s chose subprotocol %r, which the client did not offer "
                "(offered: %s); refusing with 500",
                scope.get("path"),
                subprotocol,
                scope.get("subprotocols"),
            )
            return protocol.reject(500, "The WebSocket consumer chose an unoffered subprotocol.\n")
        response.headers["Sec-WebSocket-Protocol"] = subprotocol
    for name, value in opened.headers:
        response.headers[_text(name)] = _text(value)
    return response


def count_handshake(status: int) -> None:
    """Count the handshake's outcome in the metrics (101: accepted)."""
    if status == 101:
        _metrics.record_handshake("accepted")
    else:
        _metrics.record_handshake("refused", _REFUSAL_REASONS.get(status, str(status)))
