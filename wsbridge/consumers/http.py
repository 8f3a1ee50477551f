"""HTTP consumers: take over chosen URLs to answer later, stream, or send Server-Sent Events.

A site routes a URL to a consumer with ``@router.http(pattern)``; every other
URL stays with the site's own WSGI app. The consumer gets the request
(``scope`` as for WebSockets plus ``method``, and the body) and answers now
or later, from any handler, including group events::

    @router.http("orders/<int:order>/wait/")
    class OrderReady(HttpConsumer):
        def handle(self, body):
            self.order = self.scope["url_route"]["kwargs"]["order"]
            self.channel_layer.group_add(f"order.{self.order}", self.channel_name)
            # no answer yet: the request is held until an event arrives

        def order_ready(self, event):            # "order.ready" -> order_ready
            self.send_response(200, event["html"], content_type="text/html")

The transport pushes ``{"type": "http.request", "body": b"...", "more_body":
False}`` and, when the exchange ends (the response is complete, the client
went away, or the hold timeout answered), ``{"type": "http.disconnect"}``.
The consumer emits ``http.response.start`` and ``http.response.body``.

:class:`SseConsumer` streams ``text/event-stream`` (the WHATWG HTML
"Server-sent events" section) with ``send_event(data, event=, id=, retry=)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs

from .. import metrics as _metrics
from ..exceptions import DenyConnection, StopConsumer
from ..protocol.connection import Close, refusal_for
from .consumer import BaseConsumer
from .message import Channel, Message

__all__ = [
    "HttpConsumer",
    "SseConsumer",
    "function_http_consumer",
    "format_sse",
    "normalize_headers",
    "HTTP_REPLY_KEYS",
]

Headers = Iterable[tuple[bytes | str, bytes | str]] | Mapping[str, str]

#: Keys of a Channels 1.x HTTP reply (``http.response!`` message content).
HTTP_REPLY_KEYS = frozenset(("status", "headers", "content", "more_content"))

_NEWLINES = re.compile(r"\r\n|\r|\n")


def normalize_headers(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    """Turn a dict or a list of (name, value) pairs into lower-cased byte pairs.

    Raises:
        ValueError: a name or value holds CR, LF or NUL (header injection).
    """
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[bytes, bytes]] = []
    for name, value in items:
        bname = name.encode("latin-1") if isinstance(name, str) else bytes(name)
        bvalue = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        if any(c in bname + bvalue for c in b"\r\n\x00"):
            raise ValueError(f"header {bname!r} holds CR, LF or NUL; refused (header injection)")
        out.append((bname.lower(), bvalue))
    return out


def _as_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


class HttpConsumer(BaseConsumer):
    """Serves one HTTP request on a URL taken over with ``@router.http``.

    Override :meth:`handle` (the request is complete: ``self.body``), then
    answer now or from a later handler with :meth:`send_response`, or with
    :meth:`send_headers` and :meth:`send_body` to stream. Handlers for group
    events work as on WebSocket consumers (``"news.item"`` -> ``news_item``).
    :meth:`disconnect` runs once when the exchange is over, however it ended.

    Class attributes set the limits; ``None`` means the server's setting.

    Attributes:
        groups: groups joined before ``handle`` and left at the end.
        max_body_size: bytes accepted in the request body (413 beyond).
        hold_timeout: seconds a request may wait for ``send_headers``
            before the server answers ``timeout_status``; 0 waits forever.
        timeout_status: the status of that answer (504 by default).
        keepalive_interval: while a streamed response is idle for this many
            seconds the server writes ``keepalive_body`` (``SseConsumer``
            uses a comment line); None sends nothing.
    """

    scope_type: ClassVar[str] = "http"
    groups: ClassVar[Iterable[str] | None] = None
    max_body_size: ClassVar[int | None] = None
    hold_timeout: ClassVar[float | None] = None
    timeout_status: ClassVar[int | None] = None
    keepalive_interval: ClassVar[float | None] = None
    keepalive_body: ClassVar[bytes] = b""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "fastlane", None) is not None:
            raise TypeError(
                f"{cls.__name__}.fastlane: a fastlane is for WebSocket consumers; "
                "an HTTP or SSE consumer sends from its handlers"
            )

    def __init__(self, scope: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(scope, **kwargs)
        self._body_parts: list[bytes] = []
        self.body = b""
        self.response_started = False
        self.response_complete = False
        self.status: int | None = None

    # -- the request ----------------------------------------------------------

    @property
    def method(self) -> str:
        """The request method, upper case (``"GET"``, ``"POST"``...)."""
        return str(self.scope.get("method", "GET"))

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed into ``{name: [values]}``."""
        return parse_qs(self.scope.get("query_string", b"").decode("latin-1"))

    def get_header(self, name: str, default: str | None = None) -> str | None:
        """One request header (case-insensitive), decoded as latin-1; ``default`` if absent."""
        key = name.lower().encode("latin-1")
        for hname, value in self.scope.get("headers", ()):
            if hname == key:
                return str(value.decode("latin-1"))
        return default

    # -- events from the transport ---------------------------------------------

    def http_request(self, message: dict[str, Any]) -> None:
        self._body_parts.append(message.get("body", b"") or b"")
        if message.get("more_body"):
            return
        self.body = b"".join(self._body_parts)
        self._body_parts = []
        for group in self.groups or ():
            self.channel_layer.group_add(group, self.channel_name)  # type: ignore[union-attr,arg-type]
        try:
            self.handle(self.body)
        except DenyConnection:
            if not self.response_started:
                # A refusal before the response, as on a WebSocket handshake: 403.
                self.send_response(refusal_for(Close()).status, b"Forbidden")

    def http_disconnect(self, message: dict[str, Any]) -> None:
        for group in self.groups or ():
            self.channel_layer.group_discard(group, self.channel_name)  # type: ignore[union-attr,arg-type]
        try:
            self.disconnect()
        finally:
            raise StopConsumer()

    # -- to override --------------------------------------------------------------

    def handle(self, body: bytes) -> None:
        """The request arrived with ``body``: answer now, or later from another handler.

        Raise ``DenyConnection`` to answer 403. The default does nothing: the
        request is held until a handler (a group event's, say) answers it, or
        the hold timeout does.
        """

    def disconnect(self) -> None:
        """The exchange is over (answered, client gone, or timed out): clean up."""

    # -- to call ------------------------------------------------------------------

    def send_headers(self, status: int = 200, headers: Headers | None = None) -> None:
        """Start the response. Follow with one or more :meth:`send_body` calls.

        Raises:
            RuntimeError: the response has already started.
        """
        if self.response_started:
            raise RuntimeError(f"{type(self).__name__}: the response has already started")
        if not 100 <= int(status) <= 999:
            raise ValueError(f"status {status!r} is not a valid HTTP status code")
        self.response_started = True
        self.status = int(status)
        self.base_send(
            {
                "type": "http.response.start",
                "status": int(status),
                "headers": normalize_headers(headers),
            }
        )

    def send_body(self, body: bytes | str, *, more_body: bool = False) -> None:
        """Send a piece of the body (str is UTF-8 encoded); ``more_body=False`` ends it.

        Sends after the end are dropped (the exchange is over).

        Raises:
            RuntimeError: :meth:`send_headers` was not called first.
        """
        if not self.response_started:
            raise RuntimeError(f"{type(self).__name__}: call send_headers() before send_body()")
        if self.response_complete:
            return
        self.response_complete = not more_body
        self.base_send(
            {"type": "http.response.body", "body": _as_bytes(body), "more_body": more_body}
        )

    def send_response(
        self,
        status: int,
        body: bytes | str = b"",
        headers: Headers | None = None,
        *,
        content_type: str | None = None,
    ) -> None:
        """Answer in one go: status, headers (Content-Length added) and the whole body.

        ``content_type`` defaults to ``text/plain; charset=utf-8`` for a str
        body and to no header for bytes.
        """
        data = _as_bytes(body)
        pairs = normalize_headers(headers)
        names = {name for name, _ in pairs}
        if content_type is None and isinstance(body, str):
            content_type = "text/plain; charset=utf-8"
        if content_type is not None and b"content-type" not in names:
            pairs.append((b"content-type", content_type.encode("latin-1")))
        if b"content-length" not in names:
            pairs.append((b"content-length", str(len(data)).encode("ascii")))
        self.send_headers(status, pairs)
        self.send_body(data)

    def send_json(self, content: Any, status: int = 200, headers: Headers | None = None) -> None:
        """Answer with ``content`` encoded as JSON."""
        self.send_response(
            status,
            json.dumps(content, separators=(",", ":")).encode("utf-8"),
            headers,
            content_type="application/json",
        )

    # -- Channels 1.x reply dicts (``{"status": 200, "content": b"..."}``) ---------

    def dispatch(self, message: dict[str, Any]) -> None:
        if "type" not in message and message and set(message) <= HTTP_REPLY_KEYS:
            self.send_reply(message)
            return
        super().dispatch(message)

    def send_reply(self, content: dict[str, Any]) -> None:
        """Send a Channels 1.x HTTP reply: ``status``/``headers`` start, ``content`` body."""
        if not self.response_started:
            self.send_headers(int(content.get("status", 200)), content.get("headers"))
        elif "status" in content:
            raise RuntimeError(f"{type(self).__name__}: the response has already started")
        self.send_body(content.get("content", b""), more_body=bool(content.get("more_content")))


# -- Server-Sent Events -----------------------------------------------------------


def format_sse(
    data: str | bytes | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,  # noqa: A002 - the field's name in the spec
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one Server-Sent Event as ``text/event-stream`` bytes.

    ``data`` may hold several lines (any of CRLF, CR, LF): each becomes its
    own ``data:`` field and the browser joins them with LF again. An event
    with no data, only ``id``/``retry``/``comment``, is valid: browsers
    update their state and dispatch nothing.

    Raises:
        ValueError: ``event`` or ``id`` holds a line break (or ``id`` a NUL,
            which browsers ignore), or ``retry`` is negative.
    """
    lines: list[str] = []
    if comment is not None:
        lines.extend(": " + line if line else ":" for line in _NEWLINES.split(comment))
    if retry is not None:
        if int(retry) < 0:
            raise ValueError("retry must be a non-negative number of milliseconds")
        lines.append(f"retry: {int(retry)}")
    if id is not None:
        sid = str(id)
        if _NEWLINES.search(sid) or "\x00" in sid:
            raise ValueError("an event id cannot hold line breaks or NUL")
        lines.append(f"id: {sid}")
    if event is not None:
        if _NEWLINES.search(event):
            raise ValueError("an event name cannot hold line breaks")
        lines.append(f"event: {event}")
    if data is not None:
        text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
        lines.extend(f"data: {line}" for line in _NEWLINES.split(text))
    if not lines:
        raise ValueError("an event needs at least one of data, event, id, retry or comment")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


# The last data-only event: a broadcast hands one str to every stream of the process,
# so it is formatted once for all of them (an identity check, one entry).
_last_data: list[Any] = [None, b""]


def _data_event(data: str | bytes) -> bytes:
    """``format_sse(data)``, formatted once for a run of sends of the same object."""
    last = _last_data
    if data is last[0]:
        cached: bytes = last[1]
        return cached
    payload = format_sse(data)
    if type(data) in (str, bytes):  # immutable: never a subclass that could change
        last[0], last[1] = data, payload
    return payload


def is_event_stream(event: Mapping[str, Any]) -> bool:
    """Whether an ``http.response.start`` event starts a ``text/event-stream``."""
    for name, value in event.get("headers") or ():
        name = name.encode("latin-1") if isinstance(name, str) else bytes(name)
        value = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
            return True
    return False


def plain_response(status: int, body: bytes) -> list[dict[str, Any]]:
    """The ``http.response.*`` events of a whole plain-text answer (the runner's own)."""
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
    }
    return [start, {"type": "http.response.body", "body": body, "more_body": False}]


def sse_close(code: int, reason: str) -> dict[str, Any]:
    """The last event of a stream closed by the server: ``wsbridge.close`` with code and reason."""
    data = json.dumps({"code": code, "reason": reason})
    return {
        "type": "http.response.body",
        "body": format_sse(data, event="wsbridge.close"),
        "more_body": False,
    }


def sse_data(text: str | None, data: bytes | None) -> dict[str, Any]:
    """A stream's event carrying ``text`` (or ``data`` decoded as UTF-8), straight to the client."""
    payload = text if text is not None else (data or b"").decode("utf-8", "replace")
    return {"type": "http.response.body", "body": format_sse(payload), "more_body": True}


class SseConsumer(HttpConsumer):
    """Streams Server-Sent Events (``text/event-stream``) to a browser ``EventSource``.

    Join groups with ``groups = [...]`` (or in :meth:`connect`) and call
    :meth:`send_event` from handlers. A reconnecting browser sends the last
    id it saw: it is ``self.last_event_id`` (None on a first connection)
    when :meth:`connect` runs, so missed events can be sent again there.

    The server writes a comment every ``keepalive_interval`` seconds of
    silence, which keeps proxies from closing the stream and lets a gone
    client be noticed. Set ``retry`` (milliseconds) to tell browsers how
    long to wait before reconnecting.
    """

    keepalive_interval: ClassVar[float | None] = 15.0
    keepalive_body: ClassVar[bytes] = b": keep-alive\n\n"
    #: The reconnection delay in ms sent to the browser first (None keeps the browser's default).
    retry: ClassVar[int | None] = None
    #: Extra response headers.
    stream_headers: ClassVar[Headers | None] = None

    def __init__(self, scope: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(scope, **kwargs)
        self.last_event_id: str | None = self.get_header("last-event-id")
        self._sse_counted = False
        #: The last position seen per history group; the default event id carries them.
        self.positions: dict[str, str] = {}

    def http_disconnect(self, message: dict[str, Any]) -> None:
        if self._sse_counted:
            self._sse_counted = False
            _metrics.sse_stream_closed()
        super().http_disconnect(message)

    def recovery_positions(self) -> dict[str, str] | None:
        """The positions in ``Last-Event-ID`` (see :mod:`wsbridge.protocol.recovery`)."""
        from ..protocol.recovery import parse_sse_id

        found = parse_sse_id(self.last_event_id)
        if found:
            self.positions.update(found)
        return found

    def dispatch(self, message: dict[str, Any]) -> None:
        position = message.get("position")
        if isinstance(position, str) and isinstance(message.get("group"), str):
            self.positions[message["group"]] = position
        super().dispatch(message)

    def history_recovery(self, event: dict[str, Any]) -> None:
        """Tell the browser how recovery went: an event named ``wsbridge.recovery``.

        On failure the stream's id moves to the group's current position,
        so the next reconnect starts from there.
        """
        if not event.get("recovered") and event.get("position"):
            self.positions[event["group"]] = event["position"]
        data = {k: event.get(k) for k in ("group", "recovered", "position", "missed")}
        self.send_event(json.dumps(data), event="wsbridge.recovery", id=self._positions_id())

    def _positions_id(self) -> str | None:
        if not self.positions:
            return None
        from ..protocol.recovery import format_sse_id

        return format_sse_id(self.positions)

    def handle(self, body: bytes) -> None:
        self.connect()
        if not self.response_started:
            self.start_stream()

    def connect(self) -> None:
        """The stream is about to start: check access, replay missed events.

        ``self.last_event_id`` is the ``Last-Event-ID`` header of a
        reconnecting browser. Raise ``DenyConnection`` to answer 403, or call
        ``send_response(204)`` to tell the browser to stop reconnecting.
        """

    def start_stream(self) -> None:
        """Send the stream's headers (and ``retry``); :meth:`send_event` calls it when needed."""
        if self.response_started:
            return
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        headers.extend(normalize_headers(self.stream_headers))
        self.send_headers(200, headers)
        _metrics.sse_stream_opened()
        self._sse_counted = True
        first = format_sse(retry=self.retry) if self.retry is not None else format_sse(comment="")
        self.send_body(first, more_body=True)

    def send_event(
        self,
        data: str | bytes | None = None,
        *,
        event: str | None = None,
        id: str | int | None = None,  # noqa: A002
        retry: int | None = None,
    ) -> None:
        """Send one event; see :func:`format_sse` for the fields.

        Without ``id``, an event sent while handling a message of a history
        group gets the stream's positions as its id, so a reconnecting
        browser's ``Last-Event-ID`` recovers what it missed.
        """
        if id is None:
            id = self._positions_id()  # noqa: A001
        if event is None and id is None and retry is None and data is not None:
            payload = _data_event(data)
        else:
            payload = format_sse(data, event=event, id=id, retry=retry)
        stats = _metrics.STATS
        stats.sse_messages_out += 1
        stats.sse_bytes_out += len(payload)
        self.start_stream()
        self.send_body(payload, more_body=True)

    def send_comment(self, text: str = "") -> None:
        """Send a comment line (browsers ignore it)."""
        self.start_stream()
        self.send_body(format_sse(comment=text), more_body=True)

    def close(self) -> None:
        """End the stream. The browser reconnects after ``retry`` ms unless told 204."""
        self.start_stream()
        self.send_body(b"", more_body=False)


# -- the function form --------------------------------------------------------------


class _HttpReplyChannel(Channel):
    """``message.reply_channel`` of an HTTP function consumer: replies go to the client."""

    def __init__(self, consumer: HttpConsumer) -> None:
        super().__init__(
            consumer.channel_name or "http.response", channel_layer=consumer.channel_layer
        )
        self._consumer = consumer

    def send(
        self, content: dict[str, Any], immediately: bool = False, delay: float | None = None
    ) -> None:
        if delay:
            super().send(content, delay=delay)
            return
        self._consumer.send_reply(content)


class FunctionHttpConsumer(HttpConsumer):
    """Runs a function for each request (Channels 1.x ``http.request`` consumers).

    The function takes one ``message`` whose content holds ``method``,
    ``path``, ``query_string``, ``headers``, ``body``, ``client``, ``server``
    and ``reply_channel``. It answers with
    ``message.reply_channel.send({"status": 200, "content": b"..."})``, now or
    later (``Group("g").add(message.reply_channel)`` and a later group send of
    a reply dict), or returns the answer: a str or bytes (200), or a reply dict.
    """

    func: ClassVar[Callable[[Message], Any]]

    def handle(self, body: bytes) -> None:
        reply_channel = _HttpReplyChannel(self)
        content = {
            "reply_channel": self.channel_name,
            "http_version": self.scope.get("http_version", "1.1"),
            "method": self.method,
            "path": self.scope.get("path"),
            "root_path": self.scope.get("root_path", ""),
            "query_string": self.scope.get("query_string", b""),
            "headers": self.scope.get("headers", []),
            "body": body,
            "client": self.scope.get("client"),
            "server": self.scope.get("server"),
        }
        message = Message(content, "http.request", self.channel_layer, reply_channel, self.scope)
        result = type(self).func(message)
        if result is None or self.response_complete:
            return
        if isinstance(result, Mapping):
            self.send_reply(dict(result))
        elif isinstance(result, (str, bytes)):
            self.send_response(200, result)
        else:
            raise TypeError(
                f"{type(self).func.__name__} returned a {type(result).__name__}; "
                "return None, str, bytes or a reply dict"
            )


def function_http_consumer(func: Callable[[Message], Any]) -> type[HttpConsumer]:
    """Wrap a function taking one ``message`` into an HTTP consumer class.

    ``@router.http(pattern)`` on a function calls this; see
    :class:`FunctionHttpConsumer` for what the function receives and returns.
    """
    return type(
        f"FunctionHttpConsumer[{getattr(func, '__name__', 'function')}]",
        (FunctionHttpConsumer,),
        {"func": staticmethod(func), "__module__": getattr(func, "__module__", __name__)},
    )
