"""Timeouts and quiet refusals for gevent's pywsgi handler (``wsbridge serve``).

:class:`LimitsHandlerMixin` goes before ``gevent.pywsgi.WSGIHandler`` in
:class:`~wsbridge.transport.servers.pywsgi.WSBridgeHandler`'s bases. pywsgi reads a
request as ``handle()`` -> ``handle_one_request()`` (request line, then
headers through ``read_request``) -> ``handle_one_response()`` (the app,
then ``wsgi_input._discard()`` of any unread body). Nothing there has a
timeout, so a peer that sends half a request line holds its greenlet and
descriptor forever. The mixin bounds each wait a peer controls:

* the first byte of a kept-alive connection's next request:
  ``keepalive_timeout`` (then the connection is closed, nothing answered);
* the request line and headers: ``header_timeout``, from the first byte of
  a new connection (so a WebSocket handshake is bounded before its
  consumer is asked) or of a later request; past it ``408`` and close;
* the unread rest of a body after the app answered: ``body_timeout``.

It also turns pywsgi's logging of bad requests (a traceback on stderr for
``GET / HTTP/1`` or too many headers, an ERROR line for each malformed
request, a traceback for a broken pipe) into :func:`~wsbridge.transport.limits.refused`:
one WARNING line per reason and interval, with a running count.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import gevent

from ..limits import ServerTimeouts, refused
from .headers import message_class, read_headers

__all__ = ["LimitsHandlerMixin", "DEFAULT_TIMEOUTS", "REQUEST_TIMEOUT_RESPONSE"]

logger = logging.getLogger("wsbridge.server")

DEFAULT_TIMEOUTS = ServerTimeouts()

REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)
_BAD_REQUEST_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class _Idle(Exception):
    """The keep-alive wait for a next request ran out."""


class _HeadTimeout(Exception):
    """The request line and headers did not arrive within ``header_timeout``."""


class _BodyTimeout(Exception):
    """The unread rest of a body did not arrive within ``body_timeout``."""


_MESSAGE = message_class()


def set_nodelay(sock: Any) -> None:
    """Turn Nagle's algorithm off on a TCP connection (nothing for other sockets).

    pywsgi and gunicorn write an answer's head and its body in two sends.
    With Nagle on, the body waits for the peer to acknowledge the head, and
    the peer delays that acknowledgement (40 ms on Linux): every long-poll
    answer and every small WebSocket frame after another one paid it.
    """
    try:
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # closed already, or not a real socket
        pass


class LimitsHandlerMixin:
    """Bounded waits and quiet refusals for a pywsgi handler (see the module docstring).

    The server's ``wsbridge_timeouts`` attribute (a :class:`ServerTimeouts`,
    set by :func:`~wsbridge.transport.servers.pywsgi.make_server`) holds the values;
    a server without it gets the defaults.
    """

    socket: Any
    rfile: Any
    server: Any
    client_address: Any
    close_connection: bool
    _wsbridge_requests = 0
    _wsbridge_head_timer: Any = None

    def _wsbridge_timeouts(self) -> ServerTimeouts:
        return getattr(self.server, "wsbridge_timeouts", None) or DEFAULT_TIMEOUTS

    def _peer(self) -> str:
        address = self.client_address
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{address[0]}:{address[1]}"
        return str(address)

    def handle(self) -> None:
        set_nodelay(self.socket)
        try:
            super().handle()  # type: ignore[misc]
        except OSError as exc:  # a broken pipe writing an error answer: the client left
            refused("client_gone", f"{self._peer()}: {exc}", log=logger)

    def handle_one_request(self) -> Any:
        rfile = self.rfile
        if rfile is None or rfile.closed:
            return None
        timeouts = self._wsbridge_timeouts()
        later = self._wsbridge_requests > 0
        wait = timeouts.keepalive_timeout if later else timeouts.header_timeout
        try:
            with gevent.Timeout(wait, _Idle):
                if not rfile.peek(1):
                    return None  # EOF: the client closed between requests
        except _Idle:
            if later:
                refused("keepalive_timeout", f"{self._peer()} idle for {wait}s", log=logger)
                return None
            refused("header_timeout", f"{self._peer()} sent nothing in {wait}s", log=logger)
            return ("408", REQUEST_TIMEOUT_RESPONSE)
        except OSError:
            return None
        self._wsbridge_requests += 1
        timer = gevent.Timeout(timeouts.header_timeout, _HeadTimeout)
        self._wsbridge_head_timer = timer
        timer.start()
        try:
            return super().handle_one_request()  # type: ignore[misc]
        except _HeadTimeout:
            refused(
                "header_timeout",
                f"{self._peer()} did not send its request head in {timeouts.header_timeout}s",
                log=logger,
            )
            return ("408", REQUEST_TIMEOUT_RESPONSE)
        finally:
            timer.close()
            self._wsbridge_head_timer = None

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 (pywsgi's name)
        # The headers without the e-mail parser when they are plain (headers.py).
        if _MESSAGE is None:
            return super().MessageClass(fp, *args)  # type: ignore[misc]
        return read_headers(fp, _MESSAGE)

    def get_environ(self) -> dict[str, Any]:
        # The head is in: the application's time is its own from here on.
        timer = self._wsbridge_head_timer
        if timer is not None:
            timer.close()
        return super().get_environ()  # type: ignore[misc, no-any-return]

    def run_application(self) -> None:
        try:
            super().run_application()  # type: ignore[misc]
        finally:
            self._wsbridge_discard_body()

    def _wsbridge_discard_body(self) -> None:
        # pywsgi reads the unread rest of the body after the app, with no
        # deadline: read it here under body_timeout, or give up and close.
        stream = getattr(self, "wsgi_input", None)
        if stream is None or getattr(stream, "_chunked_input_error", True):
            return
        left = getattr(stream, "position", 0) < (getattr(stream, "content_length", 0) or 0)
        if not (left or getattr(stream, "chunked_input", False)):
            return
        timeout = self._wsbridge_timeouts().body_timeout
        try:
            with gevent.Timeout(timeout, _BodyTimeout):
                stream._discard()
        except _BodyTimeout:
            refused("body_timeout", f"{self._peer()}: body unfinished after {timeout}s", log=logger)
            stream._chunked_input_error = True
            self.close_connection = True
        except OSError:
            stream._chunked_input_error = True
            self.close_connection = True

    def _handle_client_error(self, ex: BaseException) -> Any:
        refused("bad_request", f"from {self._peer()}: {_describe(ex)}", log=logger)
        return ("400", _BAD_REQUEST_RESPONSE)

    def log_error(self, msg: str, *args: Any) -> None:
        try:
            message = msg % args if args else msg
        except (TypeError, ValueError):
            message = f"{msg!r} {args!r}"
        refused("bad_request", f"from {self._peer()}: {message}", log=logger)

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        if isinstance(v, OSError):  # the client went away mid-answer: no traceback
            refused("client_gone", f"{self._peer()}: {v}", log=logger)
            self.close_connection = True
            return
        super().handle_error(t, v, tb)  # type: ignore[misc]


def _describe(ex: BaseException) -> str:
    text = getattr(ex, "formatted_message", None) or str(ex) or type(ex).__name__
    return text if len(text) <= 200 else text[:200] + "..."
