"""Budgets and timeouts that keep one client from costing the others, and the refusal log.

Three parts, each used by the transports:

* :class:`ServerTimeouts`: how long a peer may take to send a request head
  and how long an idle keep-alive connection is kept, applied by
  ``wsbridge serve``'s pywsgi handler (:mod:`wsbridge.transport.server`);
* :class:`InboundBudget`: the WebSocket read loop's per-connection budget:
  it says when to yield to the hub (after bounded work, whatever the frames)
  and when a client sends control frames faster than allowed;
* :func:`refused`: every refusal, timeout and dropped bad request is
  counted per reason (:func:`refusal_counts`) and logged as one WARNING
  line per reason and interval with the running count, never a traceback.

The limits and what a client sees when one trips are listed in one table
in ``docs/topics/security.rst``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ServerTimeouts",
    "InboundBudget",
    "refused",
    "refusal_counts",
    "reset_refusal_counts",
    "close_after_response",
    "WARN_INTERVAL",
]

logger = logging.getLogger("wsbridge.limits")

#: Seconds between two WARNING lines for the same reason (the count keeps running).
WARN_INTERVAL = 10.0

_counts: dict[str, int] = {}
_last_warned: dict[str, float] = {}
_lock = threading.Lock()


def refused(reason: str, detail: str = "", *, log: logging.Logger | None = None) -> int:
    """Count one refusal (a bad request, a timeout, a limit) and log it at most once per interval.

    Args:
        reason: a short stable key (``"bad_request"``, ``"header_timeout"``...):
            the counter's name and the start of the log line.
        detail: what this instance was, for the log line (peer, path, limit).
        log: the logger to write to (default ``wsbridge.limits``).

    Returns:
        The running count for ``reason``.
    """
    now = time.monotonic()
    with _lock:
        count = _counts.get(reason, 0) + 1
        _counts[reason] = count
        last = _last_warned.get(reason)
        warn = last is None or now - last >= WARN_INTERVAL
        if warn:
            _last_warned[reason] = now
    target = log or logger
    if warn:
        target.warning(
            "%s: %s (%d so far; at most one line per %gs)",
            reason,
            detail or "-",
            count,
            WARN_INTERVAL,
        )
    else:
        target.debug("%s: %s (%d so far)", reason, detail or "-", count)
    return count


def refusal_counts() -> dict[str, int]:
    """How many refusals of each reason this process counted since it started (a copy)."""
    with _lock:
        return dict(_counts)


def reset_refusal_counts() -> None:
    """Forget the counts and the log intervals (tests)."""
    with _lock:
        _counts.clear()
        _last_warned.clear()


@dataclass(frozen=True)
class ServerTimeouts:
    """Timeouts of ``wsbridge serve`` on the bytes before the application is called.

    Attributes:
        header_timeout: seconds from the first byte of a request to the end of
            its headers (the request line and headers of a WebSocket handshake
            included, so a handshake is bounded before the consumer is asked);
            past it the client gets ``408 Request Timeout`` and the connection
            is closed. None disables it (do not).
        keepalive_timeout: seconds an idle keep-alive connection may wait for
            its next request; past it the connection is closed without an
            answer (nothing was asked). None keeps idle connections forever.
        body_timeout: seconds the unread rest of a request body may take to
            arrive once the application has answered (pywsgi reads it to keep
            the connection usable); past it the connection is closed.
    """

    header_timeout: float | None = 10.0
    keepalive_timeout: float | None = 30.0
    body_timeout: float | None = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout", "keepalive_timeout", "body_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")


class InboundBudget:
    """One WebSocket connection's inbound budget: when to yield, when to refuse.

    The read loop calls :meth:`spend` after each slice of bytes it fed to the
    protocol; a true answer means "yield to the hub now" so that every other
    greenlet runs between two slices, whatever the frames were. Control
    frames (PING, PONG) are also drawn from a token bucket: :meth:`control`
    answers False once a client sends them faster than ``rate`` per second
    (after a burst of ``burst``), and the connection is then closed with 1008.

    Args:
        rate: control frames allowed per second on average, or None for no limit.
        burst: control frames allowed at once.
        frames_per_slice: frames handled before the loop yields.
        bytes_per_slice: bytes handled before the loop yields.
    """

    __slots__ = (
        "rate",
        "burst",
        "_tokens",
        "_stamp",
        "_frames",
        "_bytes",
        "frames_per_slice",
        "bytes_per_slice",
    )

    def __init__(
        self,
        rate: float | None,
        burst: int,
        *,
        frames_per_slice: int = 64,
        bytes_per_slice: int = 256 * 1024,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._frames = 0
        self._bytes = 0
        self.frames_per_slice = frames_per_slice
        self.bytes_per_slice = bytes_per_slice

    def control(self, count: int = 1) -> bool:
        """Draw ``count`` control frames; False when the client is over its rate."""
        if self.rate is None:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= count
        return self._tokens >= 0

    def spend(self, frames: int, nbytes: int) -> bool:
        """Account for work done; True when the caller should yield to the hub now."""
        self._frames += frames
        self._bytes += nbytes
        if self._frames >= self.frames_per_slice or self._bytes >= self.bytes_per_slice:
            self._frames = 0
            self._bytes = 0
            return True
        return False


def close_after_response(environ: dict[str, Any], start_response: Callable[..., Any]) -> None:
    """Make the server close this connection after the answer and read no more of the body.

    For a refused body (413, 408, a malformed one): gevent's pywsgi would
    otherwise read and discard the whole declared body to keep the
    connection alive, and gunicorn would do the same before parsing the
    next request. Works with pywsgi handlers (``wsbridge serve``, gunicorn
    ``-k gevent_pywsgi``) and gunicorn's own workers; elsewhere it does
    nothing and the ``Connection: close`` answer header is all there is.
    """
    stream = environ.get("wsgi.input")
    if stream is not None and hasattr(stream, "_chunked_input_error"):
        try:
            stream._chunked_input_error = True  # pywsgi's Input: "do not discard"
        except AttributeError:  # pragma: no cover - a different Input class
            pass
    owner = getattr(start_response, "__self__", None)
    if owner is None:
        ref = environ.get("wsbridge.pywsgi_handler")
        owner = ref() if callable(ref) else None
    if owner is None:
        return
    force_close = getattr(owner, "force_close", None)
    if callable(force_close):  # gunicorn's Response
        force_close()
    elif hasattr(owner, "close_connection"):  # a pywsgi handler
        owner.close_connection = True
