"""The client envelope: frames, streams, close codes."""

from __future__ import annotations

import pytest

from wsbridge.exceptions import BadRequest
from wsbridge.protocol.envelope import (
    Frame,
    decode_frame,
    decode_frames,
    decode_stream,
    encode_frame,
    encode_stream,
    should_reconnect,
    validate_close_code,
)


def test_text_bytes_and_close_frames_round_trip():
    frames = (Frame(1, text="héllo"), Frame(2, data=b"\x00\xff"), Frame(3, close=4001, reason="x"))
    for frame in frames:
        assert decode_frame(encode_frame(frame), allow_close=True) == frame


def test_bytes_are_standard_padded_base64():
    assert encode_frame(Frame(5, data=b"\x00\x01\x02\x03")) == {"seq": 5, "bytes": "AAECAw=="}


@pytest.mark.parametrize(
    "obj, words",
    [
        ([], "JSON object"),
        ({"text": "x"}, "'seq'"),
        ({"seq": 0, "text": "x"}, "'seq'"),
        ({"seq": True, "text": "x"}, "'seq'"),
        ({"seq": 1.5, "text": "x"}, "'seq'"),
        ({"seq": 1}, "exactly one"),
        ({"seq": 1, "text": "x", "bytes": "AA=="}, "exactly one"),
        ({"seq": 1, "text": 3}, "'text' must be a string"),
        ({"seq": 1, "bytes": "!!"}, "base64"),
        ({"seq": 1, "bytes": "é"}, "base64"),
        ({"seq": 1, "close": 1000}, "exactly one"),
    ],
)
def test_bad_client_frames_are_refused_with_a_reason(obj, words):
    with pytest.raises(BadRequest) as info:
        decode_frame(obj)
    assert words in str(info.value)


def test_a_batch_must_count_up_by_one():
    frames = decode_frames([{"seq": 4, "text": "a"}, {"seq": 5, "text": "b"}])
    assert [f.seq for f in frames] == [4, 5]
    with pytest.raises(BadRequest, match="go up by one"):
        decode_frames([{"seq": 4, "text": "a"}, {"seq": 6, "text": "b"}])
    with pytest.raises(BadRequest, match="JSON array"):
        decode_frames({"seq": 1})
    with pytest.raises(BadRequest, match="at most 2"):
        decode_frames([{"seq": i, "text": ""} for i in range(1, 4)], limit=2)


def test_close_codes_follow_rfc6455():
    assert validate_close_code(1000) == 1000
    assert validate_close_code(4999) == 4999
    for code in (999, 1005, 1006, 1015, 2000, 5000, "1000", True):
        with pytest.raises(BadRequest):
            validate_close_code(code)


def test_reconnect_rule():
    assert not should_reconnect(1000)
    assert not should_reconnect(1008)
    assert not should_reconnect(4000)
    assert not should_reconnect(4499)
    assert should_reconnect(4500)
    assert should_reconnect(1001)
    assert should_reconnect(1006)
    assert should_reconnect(1011)
    assert should_reconnect(1013)


def test_streams_wrap_and_unwrap():
    text = encode_stream("chat", {"text": "hi"})
    assert decode_stream(text) == ("chat", {"text": "hi"})
    assert decode_stream("plain text") is None
    assert decode_stream('{"stream": "a"}') is None
    assert decode_stream('{"stream": "", "payload": 1}') is None
    assert decode_stream("{not json") is None
    with pytest.raises(ValueError):
        encode_stream("", 1)
