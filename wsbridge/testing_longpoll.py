"""``LongPollClient``: a synchronous long-poll client for tests (re-exported by wsbridge.testing).

It speaks the long-poll protocol exactly as ``wsbridge.js`` does (acks,
numbered sends retried until acked, a new token after a hand-off), built on
the sans-I/O :class:`~wsbridge.protocol.longpoll_client.ClientSession`,
against a running server or, in-process, a wrapped WSGI app::

    from wsbridge.testing import LongPollClient

    def test_echo_over_long_poll(live_url):
        with LongPollClient(live_url) as client:          # "http://127.0.0.1:8000"
            client.open("/ws/echo/")
            client.send("hi")
            assert client.receive() == "hi"
            assert client.receive_nothing()

See docs/topics/testing.rst.
"""

from __future__ import annotations

import http.client
import io
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import gevent

from .exceptions import ConnectionClosed, HTTPError
from .protocol.closecodes import CloseCode
from .protocol.envelope import Frame
from .protocol.longpoll_client import ClientSession, is_transient

__all__ = ["LongPollClient"]

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class LongPollClient:
    """One long-poll session, driven synchronously.

    Args:
        target: the server's base URL (``"http://127.0.0.1:8000"``) or a WSGI
            app returned by ``wsbridge.wrap()`` (called in-process, no socket;
            its polls park the calling greenlet, so nothing else needs gevent).
            Assign ``client.target`` later to send the next requests elsewhere
            (another server process: the session follows).
        prefix: where the long-poll endpoints are mounted.
        origin: the ``Origin`` header of every request (tokens are bound to it).
        headers: more headers for every request (``Cookie``, ...).
        timeout: default seconds for :meth:`open`, :meth:`send`, :meth:`receive`.

    Over HTTP each request uses a fresh connection. The server must run in
    another process (or the test process must be monkey-patched by gevent):
    these calls block.
    """

    def __init__(
        self,
        target: str | Callable[..., Any],
        *,
        prefix: str = "/_wsbridge/lp",
        origin: str | None = None,
        headers: Headers = (),
        timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.prefix = "/" + prefix.strip("/")
        self.timeout = timeout
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        self.headers = {"Content-Type": "application/json", **dict(pairs)}
        if origin is not None:
            self.headers["Origin"] = origin
        self.session = ClientSession()
        self._inbox: deque[Frame] = deque()

    # -- state --------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """The current session token (it changes when the session moves to another process)."""
        return self.session.token

    @property
    def subprotocol(self) -> str | None:
        return self.session.subprotocol

    @property
    def closed(self) -> tuple[int, str] | None:
        """``(code, reason)`` once the session is over, else None."""
        return self.session.closed

    # -- the calls a test makes ---------------------------------------------------

    def open(
        self, path: str, *, subprotocols: Iterable[str] = (), timeout: float | None = None
    ) -> str | None:
        """Open a session on the consumer routed at ``path``; returns the chosen subprotocol.

        Raises:
            HTTPError: refused (``status`` 403), no route (404), the consumer
                crashed (500) or did not accept in time (504).
        """
        body = self.session.open_body(path, tuple(subprotocols))
        status, answer = self._retrying("open", lambda: body, timeout)
        self.session.open_answered(status, answer)
        return self.session.subprotocol

    def send(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Send one message and wait until the server has applied it (retrying over 5xx).

        Raises:
            ConnectionClosed: the session is over (or the server lost it: 1006).
            TimeoutError: not acked within ``timeout`` seconds.
        """
        self.session.queue(text=text_data, data=bytes_data)
        self.flush(timeout=timeout)

    def send_json(self, data: Any, *, timeout: float | None = None) -> None:
        """Send ``data`` as a JSON text message."""
        self.send(json.dumps(data), timeout=timeout)

    def flush(self, *, timeout: float | None = None) -> None:
        """Send every queued message until the server acks it (see :meth:`send`)."""
        while self.session.unsent:
            # The body is made again for each attempt: a retry may carry a newer token.
            status, answer = self._retrying("send", self._send_body, timeout)
            self._lost_if_gone(status, answer)
            self.session.send_answered(status, answer)

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message from the server: ``str`` for text, ``bytes`` for binary.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
            ConnectionClosed: the server closed the session (``code``,
                ``reason``), or lost it (1006).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message within {timeout or self.timeout} s")
            self._inbox.extend(self.poll(wait=remaining))
        frame = self._inbox.popleft()
        if frame.is_close:
            raise ConnectionClosed(frame.close or CloseCode.ABNORMAL, frame.reason)
        return frame.text if frame.text is not None else (frame.data or b"")

    def receive_json(self, timeout: float | None = None) -> Any:
        """The next message, decoded from JSON."""
        message = self.receive(timeout)
        if not isinstance(message, str):
            raise AssertionError(f"expected a JSON text message, got {len(message)} bytes")
        return json.loads(message)

    def receive_nothing(self, timeout: float = 0.1) -> bool:
        """True if no message (and no close) arrives within ``timeout`` seconds."""
        if self._inbox:
            return False
        self._inbox.extend(self.poll(wait=timeout))
        return not self._inbox

    def receive_close(self, timeout: float | None = None) -> int:
        """Wait for the server to close the session (messages before it are dropped); the code."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                self.receive(max(0.0, deadline - time.monotonic()))
            except ConnectionClosed as closed:
                return closed.code

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the session (the consumer gets ``websocket.disconnect`` with ``code``)."""
        if self.session.token is None or self.session.closed is not None:
            return
        body = self.session.close_body(code, reason)
        self.request("close", body)

    def __enter__(self) -> LongPollClient:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        except OSError:  # the server is gone already
            pass

    # -- one step at a time ---------------------------------------------------------

    def poll(self, wait: float | None = None) -> list[Frame]:
        """One poll (held up to ``wait`` seconds, or the server's poll timeout); the new frames.

        Acks everything seen so far. A transient failure (5xx, a refused
        connection while a server restarts) returns no frames: poll again.

        Raises:
            ConnectionClosed: the session is gone (404/410: 1006).
        """
        if self.session.closed is not None:
            raise ConnectionClosed(*self.session.closed)
        try:
            status, answer = self.request("poll", self.session.poll_body(wait), wait=wait)
        except OSError:
            self._sleep(0.05)  # a server process going away: the next request goes elsewhere
            return []
        if is_transient(status):
            self._sleep(0.05)
            return []
        self._lost_if_gone(status, answer)
        return self.session.poll_answered(status, answer)

    def request(
        self, op: str, body: dict[str, Any], *, wait: float | None = None
    ) -> tuple[int, Any]:
        """One raw request to ``{prefix}/{op}``; returns (status, decoded JSON body)."""
        data = json.dumps(body).encode()
        path = f"{self.prefix}/{op}"
        if callable(self.target):
            return self._call_app(path, data)
        url = urlsplit(self.target)
        limit = (wait if wait is not None else self.session.poll_timeout) + 10.0
        conn = http.client.HTTPConnection(
            url.hostname or "127.0.0.1", url.port or 80, timeout=limit
        )
        try:
            conn.request("POST", url.path.rstrip("/") + path, body=data, headers=self.headers)
            response = conn.getresponse()
            return response.status, _json(response.read())
        finally:
            conn.close()

    # -- helpers --------------------------------------------------------------------------

    def _retrying(
        self, op: str, make_body: Callable[[], dict[str, Any]], timeout: float | None
    ) -> tuple[int, Any]:
        # Retry over 5xx and refused connections (a restarting server), with backoff.
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        delay = 0.05
        while True:
            try:
                status, answer = self.request(op, make_body())
                if not is_transient(status):
                    return status, answer
                failure: Exception = HTTPError(f"{status} {answer}", status=status)
            except OSError as exc:
                failure = exc
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"long-poll {op} kept failing: {failure}") from failure
            self._sleep(delay)
            delay = min(delay * 2, 1.0)

    def _sleep(self, seconds: float) -> None:
        # In-process, the server's greenlets live in this thread: let them run meanwhile.
        (gevent.sleep if callable(self.target) else time.sleep)(seconds)

    def _send_body(self) -> dict[str, Any]:
        body = self.session.send_body()
        assert body is not None
        return body

    def _lost_if_gone(self, status: int, answer: Any) -> None:
        if status in (404, 410):
            reason = answer.get("error", "") if isinstance(answer, dict) else ""
            self.session.closed = (CloseCode.ABNORMAL, reason or "long-poll session lost")
            raise ConnectionClosed(*self.session.closed)

    def _call_app(self, path: str, data: bytes) -> tuple[int, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
            "HTTP_HOST": "testserver",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(data),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE",) else "HTTP_" + key] = value
        status: list[int] = []

        def start_response(line: str, headers: list[Any], exc_info: Any = None) -> Any:
            status.append(int(line.split(" ", 1)[0]))
            return lambda chunk: None

        assert callable(self.target)
        result = self.target(environ, start_response)
        try:
            raw = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return status[0], _json(raw)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
