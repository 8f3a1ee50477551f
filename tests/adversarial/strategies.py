"""Hypothesis strategies for what an attacker sends: request heads, bodies, frames.

Each strategy mixes near-valid input (a real handshake with one part
broken) with noise, since near-valid input reaches deeper into the server.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

_CTL = "".join(chr(c) for c in range(32)) + "\x7f"
#: Header text: printable ASCII, control characters, Latin-1 and a few multi-byte letters.
header_text = st.text(
    alphabet=st.sampled_from(
        list("abcXYZ019 -_.,;:=/*?\"'()<>@[]{}\\%") + list(_CTL) + ["\xe9", "\xff", "\u20ac"]
    ),
    max_size=40,
)
token_text = st.text(
    alphabet=st.sampled_from(list("abcdefgXYZ-_0189!#$%&'*+.^`|~")), min_size=1, max_size=20
)

WS_HEADERS = {
    "Host": "127.0.0.1",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg==",
    "Sec-WebSocket-Version": "13",
}
_HEADER_VALUES = {
    "Upgrade": ["websocket", "WebSocket", "h2c", "websocket, foo", ""],
    "Connection": ["Upgrade", "upgrade, keep-alive", "keep-alive", "close", ""],
    "Sec-WebSocket-Key": [
        "MDEyMzQ1Njc4OWFiY2RlZg==",
        "short",
        "",
        "=" * 24,
        "MDEy\x00NDU2Nzg5YWJjZGVmZw==",
    ],
    "Sec-WebSocket-Version": ["13", "8", "14", "", "13, 8", "abc"],
    "Host": ["127.0.0.1", "evil.example", "", "[::1", "127.0.0.1:99999"],
}
EXTRA_HEADERS = [
    "Origin",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Cookie",
    "Content-Length",
    "Transfer-Encoding",
    "X-Forwarded-For",
    "Expect",
]
_ORIGINS = [
    "http://127.0.0.1",
    "http://[::1",
    "null",
    "http://evil.example",
    "://",
    "http://",
    "http://127.0.0.1:1\x00",
    "https://127.0.0.1",
    "\x00",
]
_EXTENSIONS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=8",
    'permessage-deflate; x="',
    "foo, permessage-deflate; client_max_window_bits=99",
]


@st.composite
def handshake(draw: Any, path: str = "/ws/echo/") -> tuple[bytes, str]:
    """A raw WebSocket handshake request, one or more parts broken; ``(bytes, version)``."""
    method = (
        "GET"
        if draw(st.integers(0, 3))
        else draw(st.sampled_from(["POST", "HEAD", "get", "OPTIONS"]) | token_text)
    )
    target = (
        path
        if draw(st.integers(0, 2))
        else draw(
            st.sampled_from(
                [
                    path + "?x=1",
                    "/",
                    "/nope/",
                    "//",
                    "/%ff%fe",
                    path + "%00",
                    "*",
                    "http://127.0.0.1" + path,
                ]
            )
            | st.text(alphabet=st.sampled_from(list("/abc%?#&=\x00\x01\xff")), max_size=30)
        )
    )
    version = draw(
        st.sampled_from(
            ["HTTP/1.1"] * 20
            + ["HTTP/1.0", "HTTP/1", "HTTP/2.0", "http/1.1", "HTTP/1.1.1", "HTTP/x", ""]
        )
    )
    headers = dict(WS_HEADERS)
    for name in list(headers):
        choice = draw(st.integers(0, 29))
        if choice == 0:
            del headers[name]
        elif choice == 1:
            headers[name] = draw(st.sampled_from(_HEADER_VALUES[name]))
        elif choice == 2:
            headers[name] = draw(header_text)
    lines = [" ".join(part for part in (method, target, version) if part)]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(EXTRA_HEADERS) | token_text)
        if name == "Origin":
            value = draw(st.sampled_from(_ORIGINS) | header_text)
        elif name == "Sec-WebSocket-Extensions":
            value = draw(st.sampled_from(_EXTENSIONS) | header_text)
        else:
            value = draw(header_text)
        lines.append(f"{name}: {value}")
    if draw(st.integers(0, 19)) == 0:  # too many headers for the server's parser
        lines += [f"X-Many-{i}: {i}" for i in range(draw(st.integers(90, 130)))]
    if draw(st.integers(0, 19)) == 0:  # a malformed line
        lines.append(draw(st.sampled_from(["no colon here", " folded", ": empty name", "\x00"])))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass"), version


#: JSON values, nested a little.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int) -> bytes:
    """JSON nested ``depth`` deep (deep enough to make a recursive parser give up)."""
    return b"[" * depth + b"]" * depth


@st.composite
def longpoll_body(draw: Any, op: str, token: str | None) -> bytes:
    """A long-poll request body for ``op``: near-valid fields, noise, or hostile JSON."""
    kind = draw(st.integers(0, 14))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        depth = draw(st.sampled_from([10, 500, 3000, 20000]))
        return b'{"path": ' + nested(depth) + b"}" if op == "open" else nested(depth)
    if kind == 2:
        return json.dumps(draw(json_values)).encode()
    if kind == 3:  # a lone surrogate, escaped in JSON
        return (
            b'{"path": "/ws/echo/\\ud800", "token": "\\udfff", '
            b'"messages": [{"seq": 1, "text": "\\ud83d"}]}'
        )
    body: dict[str, Any] = {}

    def pick(valid: Any, noise: Any) -> Any:
        return draw(valid) if draw(st.integers(0, 3)) else draw(noise | json_values)

    if op == "open":
        body["path"] = pick(
            st.sampled_from(["/ws/echo/", "/ws/echo/?a=b"]),
            st.sampled_from(["/ws/sink/", "/nope/", "ws/echo/", ""]) | st.text(max_size=30),
        )
        if draw(st.booleans()):
            body["subprotocols"] = pick(st.just([]), st.lists(st.text(max_size=8), max_size=3))
    else:
        body["token"] = pick(st.just(token or ""), st.text(max_size=60))
        if op == "poll":
            body["ack"] = pick(st.integers(0, 3), st.integers(-5, 10**20))
            body["wait"] = pick(st.just(0), st.sampled_from([0.01, -1, 1e308]))
        elif op == "send":
            body["messages"] = pick(
                st.integers(1, 3).map(lambda n: [{"seq": i, "text": "x"} for i in range(1, n)]),
                st.lists(envelope_entry(), max_size=4),
            )
        else:
            body["code"] = pick(
                st.sampled_from([1000, 4000]), st.sampled_from([1005, 999, 5000, -1])
            )
            body["reason"] = pick(st.just(""), st.text(max_size=130))
    return json.dumps(body).encode()


@st.composite
def envelope_entry(draw: Any) -> Any:
    """One client envelope entry: ``{"seq", "text"|"bytes"}``, often broken."""
    entry: dict[str, Any] = {"seq": draw(st.integers(-2, 5) | json_values)}
    kind = draw(st.integers(0, 4))
    if kind == 0:
        entry["text"] = draw(st.text(max_size=30) | json_values)
    elif kind == 1:
        entry["bytes"] = draw(
            st.sampled_from(["AAEC", "AAE", "!!!!", "", "AA==", "A==="]) | st.text(max_size=12)
        )
    elif kind == 2:
        entry.update(text="a", bytes="AA==")
    elif kind == 3:
        entry["close"] = draw(st.integers(0, 6000))
    return entry if draw(st.integers(0, 9)) else draw(json_values)


@st.composite
def frame_sequence(draw: Any) -> list[dict[str, Any]]:
    """A sequence of client frames (as keyword arguments for ``harness.client_frame``).

    Half the sequences keep to RFC 6455 (so the echo path is exercised),
    half break it somewhere.
    """
    valid = draw(st.booleans())
    frames = []
    for _ in range(draw(st.integers(1, 8))):
        opcode = draw(st.sampled_from([1, 1, 2, 0, 9, 10, 8, 3, 11]))
        if opcode == 1:
            payload = draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
            if draw(st.integers(0, 9)) == 0:
                payload += b"\xc3"  # cut in the middle of a character
        elif opcode == 8:
            code = draw(st.sampled_from([1000, 1001, 1005, 1006, 999, 3000, 4999, 5000, 1015]))
            payload = code.to_bytes(2, "big") + draw(st.binary(max_size=10))
            if draw(st.integers(0, 9)) == 0:
                payload = draw(st.binary(max_size=3))
        else:
            size = draw(st.sampled_from([0, 1, 125, 126, 200]))
            payload = draw(st.binary(min_size=size, max_size=size))
        if valid:
            if opcode in (3, 11) or (opcode == 0 and not frames):
                opcode, payload = 2, payload[:125]
            if opcode == 8:
                payload = (1000).to_bytes(2, "big")
            if opcode in (9, 10):
                payload = payload[:125]
            frames.append(
                {"opcode": opcode, "payload": payload, "fin": True, "rsv": 0, "mask": True}
            )
            if opcode == 8:
                break
            continue
        frames.append(
            {
                "opcode": opcode,
                "payload": payload,
                "fin": draw(st.integers(0, 5)) > 0,
                "rsv": draw(st.sampled_from([0] * 12 + [1, 4])),
                "mask": draw(st.integers(0, 19)) > 0,
            }
        )
    return frames
