"""Test helpers for users (and for wsbridge's own tests).

``Communicator`` drives a consumer in-process, without a socket, through
the same mailbox the servers use::

    from wsbridge.testing import Communicator

    def test_echo():
        comm = Communicator(EchoConsumer, "/ws/echo/")
        accepted, subprotocol = comm.connect()
        assert accepted
        comm.send_to(text_data="hi")
        assert comm.receive_from() == "hi"
        comm.disconnect()

Pass a Router (or nothing, for ``wsbridge.router``) instead of a class to
go through routing, url_route kwargs included. ``use_channel_layer()``
gives a test its own fresh in-memory layer. See docs/topics/testing.rst.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from gevent.queue import Empty, Queue

from .consumers.routing import Router
from .consumers.routing import router as default_router
from .consumers.runner import Connection
from .exceptions import NotFound
from .layers import DEFAULT_ALIAS, get_channel_layer, set_channel_layer
from .layers.base import BaseChannelLayer
from .testing_longpoll import LongPollClient

__all__ = [
    "Communicator",
    "LongPollClient",
    "WebsocketCommunicator",
    "HttpCommunicator",
    "build_websocket_scope",
    "use_channel_layer",
]


def _latin1(value: bytes | str) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def build_websocket_scope(
    path: str,
    *,
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    subprotocols: Iterable[str] = (),
    client: tuple[str, int] = ("127.0.0.1", 50000),
    server: tuple[str, int] = ("testserver", 80),
    scheme: str = "ws",
) -> dict[str, Any]:
    """A scope like the one the WebSocket transport builds for ``path``.

    ``path`` may carry a query string; it is percent-decoded into
    ``scope["path"]`` and kept as sent in ``scope["raw_path"]``.
    """
    parts = urlsplit(path)
    raw_headers = [(_latin1(k).lower(), _latin1(v)) for k, v in headers]
    cookies: dict[str, str] = {}
    for name, value in raw_headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, sep, val = part.strip().partition("=")
                if sep:
                    cookies[key] = val
    raw_path = parts.path or "/"
    return {
        "type": "websocket",
        "scheme": scheme,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": parts.query.encode("latin-1"),
        "headers": raw_headers,
        "cookies": cookies,
        "client": list(client),
        "server": list(server),
        "subprotocols": list(subprotocols),
        "transport": "test",
    }


@contextmanager
def use_channel_layer(
    layer: BaseChannelLayer | None = None, alias: str = DEFAULT_ALIAS
) -> Iterator[BaseChannelLayer]:
    """Install ``layer`` (default: a fresh in-memory layer) for the ``with`` block.

    ``get_channel_layer()``, ``Group``, ``Channel`` and consumers all use it;
    the layer that was installed before comes back afterwards::

        with use_channel_layer() as layer:
            comm = Communicator(ChatConsumer, "/ws/chat/lobby/")
            ...
    """
    from .layers import _layers, _sources  # the process's table; restored exactly afterwards
    from .layers.memory import MemoryLayer

    previous = _layers.get(alias)
    previous_source = _sources.get(alias)
    current = layer if layer is not None else MemoryLayer()
    set_channel_layer(current, alias)
    try:
        yield current
    finally:
        if layer is None:
            current.close()
        set_channel_layer(previous, alias)
        if previous is not None and previous_source is not None:
            _sources[alias] = previous_source


def _resolve_consumer(application: Any, scope: dict[str, Any], scope_type: str) -> Any:
    """The consumer class for ``application`` (a class, a Router, or None for
    ``wsbridge.router``), filling ``scope["url_route"]``; NotFound if unrouted."""
    if application is not None and not isinstance(application, Router):
        scope.setdefault("url_route", {"args": (), "kwargs": {}})
        return application
    routes = application if application is not None else default_router
    match = routes.resolve(scope_type, scope["path"])
    if match is None:
        kind = "WebSocket" if scope_type == "websocket" else scope_type.upper()
        raise NotFound(f"no {kind} consumer is routed at {scope['path']!r}")
    scope["url_route"] = match.url_route
    return match.consumer


class Communicator:
    """Drive one WebSocket consumer synchronously, without a socket.

    Events go through the same :class:`~wsbridge.consumers.runner.Connection`
    mailbox the servers use, so ordering, refusals (a close before accept)
    and crashes (close 1011) behave as they do in production.

    Args:
        application: a consumer class, a Router, or None for ``wsbridge.router``.
        path: the request path, with an optional query string.
        headers: extra request headers, as (name, value) pairs.
        subprotocols: subprotocols the client offers.
        channel_layer: the layer to use (default: ``get_channel_layer()``).
        scope: extra scope keys (``user``, ``session``...), merged last.

    Raises:
        NotFound: routing found no consumer for ``path`` (the server would answer 404).
    """

    def __init__(
        self,
        application: Any = None,
        path: str = "/",
        *,
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        subprotocols: Iterable[str] = (),
        channel_layer: BaseChannelLayer | None = None,
        scope: dict[str, Any] | None = None,
    ) -> None:
        self.scope = build_websocket_scope(path, headers=headers, subprotocols=subprotocols)
        consumer_class = _resolve_consumer(application, self.scope, "websocket")
        self.scope.update(scope or {})
        self.channel_layer = channel_layer if channel_layer is not None else get_channel_layer()
        self._output: Queue[dict[str, Any]] = Queue()
        self.connection = Connection(
            self.scope, consumer_class, self.channel_layer, self._output.put
        )
        self.closed_code: int | None = None

    @property
    def channel_name(self) -> str | None:
        """The connection's channel; ``channel_layer.send(comm.channel_name, {...})`` reaches it."""
        return self.connection.channel_name

    @property
    def consumer(self) -> Any:
        """The consumer instance (to inspect its attributes in a test)."""
        return self.connection.consumer

    # -- the handshake -----------------------------------------------------

    def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the connection: ``(True, subprotocol)`` or ``(False, close code)``.

        A refusal (``DenyConnection``, ``close()`` before ``accept()``, or
        ``connect()`` returning without accepting) gives ``(False, 1000)``
        or the code passed to ``close()``; a server answers it with HTTP 403.
        A consumer that raised gives ``(False, 1011)`` (HTTP 500 on a server).
        """
        self.connection.push({"type": "websocket.connect"})
        event = self.receive_output(timeout)
        if event["type"] == "websocket.accept":
            return True, event.get("subprotocol")
        if event["type"] == "websocket.close":
            self.closed_code = event.get("code", 1000)
            return False, self.closed_code
        raise AssertionError(f"expected accept or close after connect, got {event!r}")

    # -- sending -----------------------------------------------------------

    def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one text or binary message from the client."""
        if (text_data is None) == (bytes_data is None):
            raise ValueError("send_to() takes exactly one of text_data or bytes_data")
        event: dict[str, Any] = {"type": "websocket.receive"}
        if text_data is not None:
            event["text"] = text_data
        else:
            event["bytes"] = bytes_data
        self.connection.push(event)

    def send_json_to(self, data: Any) -> None:
        """Send ``data`` as a JSON text message."""
        self.send_to(text_data=json.dumps(data))

    def send_input(self, event: dict[str, Any]) -> None:
        """Push a raw event into the mailbox (Channels' ApplicationCommunicator API)."""
        self.connection.push(event)

    # -- receiving ----------------------------------------------------------

    def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        """The next raw event the consumer emitted; ``TimeoutError`` if none came."""
        try:
            event: dict[str, Any] = self._output.get(timeout=timeout)
        except Empty:
            raise TimeoutError(f"the consumer sent nothing within {timeout} s") from None
        return event

    def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next message the consumer sent to the client (text or bytes).

        Raises:
            TimeoutError: nothing came within ``timeout`` seconds.
            AssertionError: the consumer closed the connection instead (the
                message names the exception if the consumer crashed).
        """
        event = self.receive_output(timeout)
        if event["type"] == "websocket.close":
            self.closed_code = event.get("code", 1000)
            error = self.connection.error
            why = f" after raising {error!r}" if error is not None else ""
            raise AssertionError(
                f"the consumer closed the connection with code {self.closed_code}{why}"
            )
        if event["type"] != "websocket.send":
            raise AssertionError(f"expected a websocket.send, got {event!r}")
        payload: str | bytes = event["text"] if event.get("text") is not None else event["bytes"]
        return payload

    def receive_json_from(self, timeout: float = 1) -> Any:
        """The next message, decoded from JSON (it must be a text message)."""
        payload = self.receive_from(timeout)
        if not isinstance(payload, str):
            raise AssertionError("expected a JSON text message, got a binary one")
        return json.loads(payload)

    def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True if the consumer sends nothing within ``timeout`` seconds.

        ``interval`` is accepted for Channels compatibility; the wait is
        event-driven, not polled.
        """
        if not self._output.empty():
            return False
        try:
            self._output.peek(timeout=timeout)
        except Empty:
            return True
        return False

    def receive_close(self, timeout: float = 1) -> int:
        """Wait for the consumer to close; return the close code."""
        event = self.receive_output(timeout)
        if event["type"] != "websocket.close":
            raise AssertionError(f"expected a websocket.close, got {event!r}")
        self.closed_code = event.get("code", 1000)
        return self.closed_code

    # -- the end ------------------------------------------------------------

    def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """The client goes away with ``code``; waits for the consumer to finish."""
        self.connection.disconnected(code)
        self.wait(timeout)

    def wait(self, timeout: float = 1) -> None:
        """Wait for the consumer to finish; ``TimeoutError`` if it does not."""
        if not self.connection.wait(timeout):
            raise TimeoutError(f"the consumer did not finish within {timeout} s")

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.connection.finished.is_set():
            self.disconnect()


#: The Channels name.
WebsocketCommunicator = Communicator


class HttpCommunicator:
    """Drive one HTTP consumer (``@router.http``) synchronously, without a socket.

    ``get_response()`` sends the request and collects the whole answer;
    for held or streamed responses use ``send_request()``, then
    ``receive_start()`` / ``receive_body()`` / ``receive_nothing()``, and
    ``disconnect()`` to play a client that goes away::

        comm = HttpCommunicator(Events, "GET", "/events/news/")
        comm.send_request()
        status, headers = comm.receive_start()
        get_channel_layer().group_send("news", {"type": "news.item", "html": "hi"})
        assert b"data: hi" in comm.receive_body()
        comm.disconnect()

    Args:
        application: an HttpConsumer class, a Router, or None for ``wsbridge.router``.
        method: the request method.
        path: the request path, with an optional query string.
        body: the request body.
        headers: request headers, as (name, value) pairs.
        channel_layer: the layer to use (default: ``get_channel_layer()``).
        scope: extra scope keys (``user``, ``session``...), merged last.
    """

    def __init__(
        self,
        application: Any = None,
        method: str = "GET",
        path: str = "/",
        body: bytes = b"",
        *,
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        channel_layer: BaseChannelLayer | None = None,
        scope: dict[str, Any] | None = None,
    ) -> None:
        self.scope = build_websocket_scope(path, headers=headers, scheme="http")
        self.scope.update(type="http", method=method.upper(), http_version="1.1", transport="test")
        self.scope.pop("subprotocols", None)
        consumer_class = _resolve_consumer(application, self.scope, "http")
        self.scope.update(scope or {})
        self.body = body
        self.channel_layer = channel_layer if channel_layer is not None else get_channel_layer()
        self._output: Queue[dict[str, Any]] = Queue()
        self.connection = Connection(
            self.scope, consumer_class, self.channel_layer, self._output.put
        )
        self._sent = False
        self.more_body = True

    @property
    def channel_name(self) -> str | None:
        return self.connection.channel_name

    def send_request(self, body: bytes | None = None, more_body: bool = False) -> None:
        """Send (a piece of) the body; without ``body`` it sends the one given at creation."""
        self._sent = True
        payload = self.body if body is None else body
        self.connection.push({"type": "http.request", "body": payload, "more_body": more_body})

    def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        """The next raw event the consumer emitted; ``TimeoutError`` if none came."""
        try:
            event: dict[str, Any] = self._output.get(timeout=timeout)
        except Empty:
            raise TimeoutError(f"the consumer sent nothing within {timeout} s") from None
        return event

    def receive_start(self, timeout: float = 1) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Wait for the response to start: ``(status, headers)``."""
        event = self.receive_output(timeout)
        if event["type"] != "http.response.start":
            raise AssertionError(f"expected http.response.start, got {event!r}")
        return event["status"], list(event.get("headers", []))

    def receive_body(self, timeout: float = 1) -> bytes:
        """The next piece of the body; ``self.more_body`` says whether more will follow."""
        event = self.receive_output(timeout)
        if event["type"] != "http.response.body":
            raise AssertionError(f"expected http.response.body, got {event!r}")
        self.more_body = bool(event.get("more_body"))
        body: bytes = event.get("body", b"")
        return body

    def receive_nothing(self, timeout: float = 0.1) -> bool:
        """True if the consumer sends nothing within ``timeout`` seconds."""
        if not self._output.empty():
            return False
        try:
            self._output.peek(timeout=timeout)
        except Empty:
            return True
        return False

    def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """Send the request (if not yet sent) and collect ``{"status", "headers", "body"}``."""
        if not self._sent:
            self.send_request()
        status, headers = self.receive_start(timeout)
        parts = [self.receive_body(timeout)]
        while self.more_body:
            parts.append(self.receive_body(timeout))
        return {"status": status, "headers": headers, "body": b"".join(parts)}

    def disconnect(self, timeout: float = 1) -> None:
        """End the exchange (the client went away); waits for the consumer to finish."""
        self.connection.push({"type": "http.disconnect"})
        if not self.connection.wait(timeout):
            raise TimeoutError(f"the consumer did not finish within {timeout} s of disconnect")

    def __enter__(self) -> HttpCommunicator:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.connection.finished.is_set():
            self.disconnect()
