"""The recovery wire forms (wsbridge.protocol.recovery): what clients may send, and what not."""

from __future__ import annotations

import json
import random
from urllib.parse import quote

import pytest

from wsbridge.exceptions import BadRequest
from wsbridge.layers.history import Position
from wsbridge.protocol.recovery import (
    MAX_GROUPS,
    parse_recover_param,
    parse_sse_id,
    recovery_frame,
    wrap_frame,
)


def query(value: object) -> str:
    return "a=1&wsbridge_recover=" + quote(json.dumps(value))


def test_no_parameter_means_no_recovery_and_empty_means_stamp_only():
    assert parse_recover_param(b"a=1") is None
    assert parse_recover_param("wsbridge_recover=") == {}
    assert parse_recover_param(query({})) == {}
    assert parse_recover_param(query({"news": "e:1"})) == {"news": "e:1"}


@pytest.mark.parametrize(
    "bad",
    [
        "wsbridge_recover=%7B",  # not JSON
        query([1, 2]),
        query({"news": 7}),
        query({"news": "x" * 65}),
        query({"bad name": "e:1"}),
        query({f"g{i}": "e:1" for i in range(MAX_GROUPS + 1)}),
        "wsbridge_recover=" + "x" * 9000,
    ],
)
def test_malformed_or_oversized_positions_are_a_bad_request(bad):
    with pytest.raises(BadRequest):
        parse_recover_param(bad)


def test_random_input_is_parsed_or_refused_never_anything_else():
    rng = random.Random(15)
    alphabet = '{}[]":,%7B7D@;ab9\\ \x00é'
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        for parse in (lambda t: parse_recover_param("wsbridge_recover=" + t), parse_sse_id):
            try:
                result = parse(text)
            except BadRequest:
                continue
            assert result is None or all(isinstance(v, str) for v in result.values())
        assert Position.parse(text) is None or ":" in text


def test_positions_parse_back_and_refuse_what_is_not_one():
    assert Position.parse("ab12:7") == Position("ab12", 7)
    for bad in ("", ":", "e:", ":1", "e:-1", "e:1.5", "e e:1", "e:" + "9" * 30, None, 7):
        assert Position.parse(bad) is None


def test_frames_wrap_text_and_bytes_with_their_position():
    text = json.loads(wrap_frame({"text": "hi"}, "news", "e:3")["text"])
    assert text == {"wsb": {"g": "news", "p": "e:3"}, "text": "hi"}
    raw = json.loads(wrap_frame({"bytes": b"\x00\x01"}, "news", "e:4")["text"])
    assert raw["bytes"] == "AAE="
    notice = json.loads(
        recovery_frame({"group": "news", "recovered": False, "position": "e:9", "missed": 0})[
            "text"
        ]
    )
    assert notice == {"wsb": {"g": "news", "recovered": False, "p": "e:9", "missed": 0}}
