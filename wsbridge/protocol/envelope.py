"""The client envelope: what a client and the server exchange, on every transport.

Sans-I/O: plain functions on dicts and strings, no sockets, no gevent. The
rules (written down for client authors in ``docs/topics/protocol.rst``):

* **WebSocket**: a text frame carries a text message, a binary frame a binary
  message, a close frame ``(code, reason)``. Nothing is added around them:
  the socket is reliable and ordered.
* **Long-poll**: messages travel as JSON objects in batches, each with its
  own sequence number, because an HTTP response can be lost and retried::

      {"seq": 7, "text": "hello"}
      {"seq": 8, "bytes": "AAECAw=="}          # standard base64, padded
      {"seq": 9, "close": 1000, "reason": ""}  # the last one in a session

* **Streams** (both transports): several named streams share one
  connection by wrapping a text message as JSON
  ``{"stream": "<name>", "payload": <any JSON>}``. The server sees a plain
  text message; :func:`encode_stream` / :func:`decode_stream` help a
  consumer demultiplex it.

Close codes are :class:`~wsbridge.protocol.closecodes.CloseCode` members (RFC
6455 section 7.4 codes and wsbridge's 4xxx ones); :func:`should_reconnect`
(re-exported from :mod:`wsbridge.protocol.closecodes`) is the rule
``wsbridge.js`` follows. The ``CLOSE_*`` names are aliases of those members.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from ..exceptions import BadRequest
from .closecodes import APP_FINAL, CloseCode, should_reconnect

__all__ = [
    "Frame",
    "encode_frame",
    "decode_frame",
    "decode_frames",
    "encode_stream",
    "decode_stream",
    "validate_close_code",
    "should_reconnect",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_ABNORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_SERVER_ERROR",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TRY_AGAIN_LATER",
    "APP_CODES_FINAL",
    "MAX_STREAM_NAME",
]

# The close codes are CloseCode members (protocol/closecodes.py, the one source);
# these names stay for the modules and users that import them from here.
CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
#: Never sent on the wire: the connection was lost (or a long-poll session expired).
CLOSE_ABNORMAL = CloseCode.ABNORMAL
#: The server refuses this client; clients must not reconnect on their own.
CLOSE_POLICY = CloseCode.POLICY_VIOLATION
CLOSE_TOO_BIG = CloseCode.MESSAGE_TOO_BIG
CLOSE_SERVER_ERROR = CloseCode.INTERNAL_ERROR
CLOSE_SERVICE_RESTART = CloseCode.SERVICE_RESTART
#: The client fell behind (its outbound buffer overflowed); reconnect after a delay.
CLOSE_TRY_AGAIN_LATER = CloseCode.TRY_AGAIN_LATER

#: Application close codes in this range are final: the client does not reconnect.
#: 4500-4999 are transient: the client reconnects with backoff.
APP_CODES_FINAL = APP_FINAL

#: Longest stream name accepted by :func:`decode_stream`.
MAX_STREAM_NAME = 100

_RESERVED_CODES = frozenset((1004, 1005, 1006, 1015))


@dataclass(frozen=True)
class Frame:
    """One long-poll envelope entry.

    Exactly one of ``text``, ``data`` or ``close`` is set: ``close`` holds the
    close code (with ``reason``) of the last entry of a session.
    """

    seq: int
    text: str | None = None
    data: bytes | None = None
    close: int | None = None
    reason: str = ""

    @property
    def is_close(self) -> bool:
        return self.close is not None


def encode_frame(frame: Frame) -> dict[str, Any]:
    """The JSON-ready dict for ``frame`` (``bytes`` as standard padded base64)."""
    if frame.close is not None:
        return {"seq": frame.seq, "close": frame.close, "reason": frame.reason}
    if frame.data is not None:
        return {"seq": frame.seq, "bytes": base64.b64encode(frame.data).decode("ascii")}
    return {"seq": frame.seq, "text": frame.text if frame.text is not None else ""}


def _seq(obj: dict[str, Any], where: str) -> int:
    seq = obj.get("seq")
    if type(seq) is not int or seq < 1 or seq > 2**53:
        raise BadRequest(f"{where}: 'seq' must be an integer from 1 to 2**53, got {seq!r}")
    return seq


def decode_frame(obj: object, *, where: str = "message", allow_close: bool = False) -> Frame:
    """Parse one envelope entry sent by a client.

    Raises:
        BadRequest: with a reason naming ``where`` and the problem; answer it
            as HTTP 400 and apply nothing from the request.
    """
    if not isinstance(obj, dict):
        raise BadRequest(f"{where} must be a JSON object, not {type(obj).__name__}")
    seq = _seq(obj, where)
    kinds = [key for key in ("text", "bytes", "close") if key in obj]
    if len(kinds) != 1 or (kinds[0] == "close" and not allow_close):
        allowed = "'text' or 'bytes'" + (" or 'close'" if allow_close else "")
        raise BadRequest(f"{where} must hold exactly one of {allowed}, got keys {sorted(obj)}")
    kind = kinds[0]
    if kind == "text":
        if not isinstance(obj["text"], str):
            raise BadRequest(f"{where}: 'text' must be a string")
        return Frame(seq, text=obj["text"])
    if kind == "bytes":
        raw = obj["bytes"]
        if not isinstance(raw, str):
            raise BadRequest(f"{where}: 'bytes' must be a base64 string")
        try:
            return Frame(seq, data=base64.b64decode(raw.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise BadRequest(f"{where}: 'bytes' is not valid base64 ({exc})") from None
    code = validate_close_code(obj["close"], where=where)
    reason = obj.get("reason", "")
    if not isinstance(reason, str) or len(reason.encode("utf-8")) > 123:
        raise BadRequest(f"{where}: 'reason' must be a string of at most 123 UTF-8 bytes")
    return Frame(seq, close=code, reason=reason)


def decode_frames(obj: object, *, limit: int = 10_000) -> list[Frame]:
    """Parse the ``messages`` list of a long-poll send; sequence numbers must increase by one.

    Raises:
        BadRequest: not a list, too long, a bad entry, or a sequence that
            does not go up by exactly one from entry to entry.
    """
    if not isinstance(obj, list):
        raise BadRequest(f"'messages' must be a JSON array, not {type(obj).__name__}")
    if len(obj) > limit:
        raise BadRequest(f"'messages' holds {len(obj)} entries; at most {limit} per request")
    frames = [decode_frame(item, where=f"messages[{i}]") for i, item in enumerate(obj)]
    for before, after in zip(frames, frames[1:], strict=False):
        if after.seq != before.seq + 1:
            raise BadRequest(
                f"'messages' sequence numbers must go up by one: {before.seq} then {after.seq}"
            )
    return frames


def validate_close_code(code: object, *, where: str = "close") -> int:
    """Return ``code`` if a peer may send it (RFC 6455 section 7.4), else raise BadRequest."""
    if type(code) is not int:
        raise BadRequest(f"{where}: close code must be an integer, got {code!r}")
    if code in _RESERVED_CODES or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        raise BadRequest(f"{where}: close code {code} may not be sent by a peer (RFC 6455 7.4)")
    return code


def encode_stream(stream: str, payload: Any) -> str:
    """Wrap ``payload`` (any JSON value) for the named ``stream``; send the result as text."""
    if not isinstance(stream, str) or not stream or len(stream) > MAX_STREAM_NAME:
        raise ValueError(f"a stream name is a string of 1 to {MAX_STREAM_NAME} characters")
    return json.dumps({"stream": stream, "payload": payload}, separators=(",", ":"))


def decode_stream(text: str) -> tuple[str, Any] | None:
    """Split a text message into ``(stream, payload)``, or None if it is not a stream message.

    A consumer that multiplexes routes on the name and answers with
    :func:`encode_stream`; a None result is an ordinary text message.
    """
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or set(obj) != {"stream", "payload"}:
        return None
    stream = obj["stream"]
    if not isinstance(stream, str) or not stream or len(stream) > MAX_STREAM_NAME:
        return None
    return stream, obj["payload"]
