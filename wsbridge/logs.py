"""Structured logs: a connection id on each record about a connection, and a JSON formatter.

Every connection (WebSocket, long-poll session, HTTP/SSE consumer) gets a
short id (``3f2a-1c``: this process's pid and a counter, both hex) when it
starts. While wsbridge works for that connection (its request greenlet,
its consumer's handlers in the mailbox pump), the id is in the context
variable :data:`CONNECTION_ID`, so one connection's story can be followed
across lines and across wsbridge's modules.

Put it on your records with :class:`ConnectionIdFilter` (``%(connection_id)s``
in a text format) or use :class:`JSONFormatter`, which adds it itself::

    import logging
    from wsbridge.logs import JSONFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    logging.getLogger("wsbridge").addHandler(handler)

Each record becomes one line: ``{"time": ..., "level": "INFO", "logger":
"wsbridge.websocket", "message": ..., "connection_id": "3f2a-1c", "pid": ...}``
plus ``exc_info`` as text and any ``extra=`` fields.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "CONNECTION_ID",
    "new_connection_id",
    "current_connection_id",
    "ConnectionIdFilter",
    "JSONFormatter",
    "CountedWarning",
]

#: The id of the connection wsbridge is working for in this greenlet, else None.
CONNECTION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "wsbridge_connection_id", default=None
)

_counter = itertools.count(1)
_pid_prefix = ["", 0]


def new_connection_id() -> str:
    """A new id, unique in this process and (with its pid) across the host's processes."""
    pid = os.getpid()
    if _pid_prefix[1] != pid:  # recomputed after a fork
        _pid_prefix[:] = [f"{pid:x}", pid]
    return f"{_pid_prefix[0]}-{next(_counter):x}"


def current_connection_id() -> str | None:
    """The connection this greenlet works for, or None."""
    return CONNECTION_ID.get()


class ConnectionIdFilter(logging.Filter):
    """Sets ``record.connection_id`` (``"-"`` outside a connection); never filters out.

    Add it to a handler to use ``%(connection_id)s`` in its format.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "connection_id"):
            record.connection_id = CONNECTION_ID.get() or "-"
        return True


#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with the connection id; ``extra=`` fields are kept.

    Args:
        static: fields added to every line (``{"service": "chat"}``).
    """

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        connection_id = getattr(record, "connection_id", None) or CONNECTION_ID.get()
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if connection_id and connection_id != "-":
            data["connection_id"] = connection_id
        data.update(self.static)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data and key != "connection_id":
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class CountedWarning:
    """One kind of event, said as a WARNING at most once per ``interval`` seconds with its count.

    ``warn = CountedWarning(logger, "session adopted from %s")`` then
    ``warn(holder)`` for each event: the line ends with the running count
    and the interval, so a flood costs one line per interval and a single
    event is never silent.
    """

    def __init__(self, log: logging.Logger, message: str, interval: float = 10.0) -> None:
        self.log = log
        self.message = message
        self.interval = interval
        #: Events so far (unless the caller keeps the count: see ``count=``).
        self.count = 0
        self._last = -interval

    def __call__(self, *args: Any, count: int | None = None) -> int:
        """Note one event (``args`` fill the message); returns the running count."""
        self.count = self.count + 1 if count is None else count
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log.warning(
                self.message + " [%d so far; at most one line per %gs]",
                *args,
                self.count,
                self.interval,
            )
        return self.count
