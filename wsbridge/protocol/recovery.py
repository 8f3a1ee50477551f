"""What a reconnecting client says it last saw, and how positions travel to it.

Sans-I/O. Three wire forms (docs/topics/recovery.rst):

* **WebSocket and long-poll**: ``wsbridge.js`` adds
  ``wsbridge_recover=<JSON object: group -> "epoch:offset">`` to the
  connection's query string (``{}`` on a first connection). Its presence
  asks the server to stamp positions: a frame the consumer sends while
  handling a message of a history group arrives wrapped as
  ``{"wsb": {"g": group, "p": position}, "text": ...}`` (or ``"bytes"``,
  base64), and a handler that sends nothing still sends
  ``{"wsb": {"g": ..., "p": ...}}``; the outcome of a recovery arrives as
  ``{"wsb": {"g": group, "recovered": bool, "p": position, "missed": n}}``.
* **SSE**: the event id is ``group@epoch:offset`` joined by ``;`` for every
  history group the stream has seen, so ``Last-Event-ID`` carries them all.

Too much (more than ``MAX_GROUPS`` groups or ``MAX_BYTES`` bytes) or
malformed input raises :class:`~wsbridge.exceptions.BadRequest`: the handshake is refused
(HTTP 403 for WebSocket and long-poll). A position that parses but is
forged, future or from another group's epoch is not an error here: the
layer answers it with ``recovered: false``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qs

from ..exceptions import BadRequest

__all__ = [
    "PARAM",
    "POSITIONS",
    "check_positions",
    "MAX_GROUPS",
    "MAX_BYTES",
    "parse_recover_param",
    "parse_sse_id",
    "format_sse_id",
    "wrap_frame",
    "recovery_frame",
]

PARAM = "wsbridge_recover"
#: The scope key where the server keeps the last position sent per group
#: (handed over with an adopted long-poll session).
POSITIONS = "wsbridge.positions"
MAX_GROUPS = 64
MAX_BYTES = 8192

_GROUP_RE = re.compile(r"^[a-zA-Z\d\-_.]{1,99}\Z")
_POSITION_MAX = 64


def check_positions(positions: dict[str, Any]) -> dict[str, str]:
    """Return ``positions`` if it is at most ``MAX_GROUPS`` group -> short string.

    Raises:
        BadRequest: too many, not group names, or not short strings.
    """
    return _check(positions)


def _check(positions: dict[str, Any]) -> dict[str, str]:
    if len(positions) > MAX_GROUPS:
        raise BadRequest(f"{PARAM}: {len(positions)} groups; at most {MAX_GROUPS} per connection")
    out: dict[str, str] = {}
    for group, position in positions.items():
        if not _GROUP_RE.match(group):
            raise BadRequest(f"{PARAM}: {group[:40]!r} is not a group name")
        if not isinstance(position, str) or len(position) > _POSITION_MAX:
            raise BadRequest(f"{PARAM}: the position of {group!r} must be a short string")
        out[group] = position
    return out


def parse_recover_param(query_string: bytes | str) -> dict[str, str] | None:
    """The positions a client asked to recover from, or None if it did not ask.

    Raises:
        BadRequest: too long, too many groups, not a JSON object of strings.
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    if PARAM not in query_string:
        return None
    if len(query_string) > MAX_BYTES * 3:  # percent-encoded
        raise BadRequest(f"{PARAM} is too long: at most {MAX_BYTES} bytes")
    values = parse_qs(query_string, keep_blank_values=True).get(PARAM)
    if not values:
        return None
    raw = values[-1]
    if len(raw) > MAX_BYTES:
        raise BadRequest(f"{PARAM} is too long: at most {MAX_BYTES} bytes")
    if not raw:
        return {}
    try:
        positions = json.loads(raw)
    except ValueError:
        raise BadRequest(f"{PARAM} is not JSON") from None
    if not isinstance(positions, dict):
        raise BadRequest(f"{PARAM} must be a JSON object: group -> position")
    return _check(positions)


def parse_sse_id(last_event_id: str | None) -> dict[str, str] | None:
    """The positions in a ``Last-Event-ID`` written by :func:`format_sse_id`; None if none.

    An id that is not in that form (an application's own ids) gives None.

    Raises:
        BadRequest: too long or too many groups.
    """
    if not last_event_id or "@" not in last_event_id:
        return None
    if len(last_event_id) > MAX_BYTES:
        raise BadRequest(f"Last-Event-ID is too long: at most {MAX_BYTES} bytes")
    positions: dict[str, str] = {}
    for part in last_event_id.split(";"):
        group, sep, position = part.partition("@")
        if not sep:
            return None
        positions[group] = position
    return _check(positions)


def format_sse_id(positions: dict[str, str]) -> str:
    """The SSE event id carrying ``positions`` (sorted by group, so it is stable)."""
    return ";".join(f"{group}@{positions[group]}" for group in sorted(positions))


def wrap_frame(event: dict[str, Any], group: str, position: str) -> dict[str, Any]:
    """The ``websocket.send`` event carrying ``event``'s frame and its position."""
    frame: dict[str, Any] = {"wsb": {"g": group, "p": position}}
    if event.get("text") is not None:
        frame["text"] = event["text"]
    elif event.get("bytes") is not None:
        frame["bytes"] = base64.b64encode(event["bytes"]).decode("ascii")
    return {"type": "websocket.send", "text": json.dumps(frame, separators=(",", ":"))}


def recovery_frame(notice: dict[str, Any]) -> dict[str, Any]:
    """The ``websocket.send`` event telling the page how recovering a group went."""
    frame = {
        "wsb": {
            "g": notice.get("group"),
            "recovered": bool(notice.get("recovered")),
            "p": notice.get("position"),
            "missed": int(notice.get("missed") or 0),
        }
    }
    return {"type": "websocket.send", "text": json.dumps(frame, separators=(",", ":"))}
