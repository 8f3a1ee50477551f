"""Fuzzing the client envelope decoders: any JSON value decodes or is a clean 400."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.adversarial.harness import record
from tests.adversarial.strategies import envelope_entry, json_values
from wsbridge.exceptions import BadRequest
from wsbridge.protocol.envelope import decode_frames, decode_stream, encode_frame


@given(value=st.lists(envelope_entry(), max_size=6) | json_values)
def test_decode_frames_accepts_or_refuses_with_400(value):
    try:
        frames = decode_frames(value)
    except BadRequest as exc:
        assert exc.status == 400
        record("envelope:decode_frames", 400)
        return
    record("envelope:decode_frames", "ok")
    for frame in frames:
        json.dumps(encode_frame(frame))  # what was accepted can be sent back
        if frame.text is not None:
            frame.text.encode("utf-8")  # no lone surrogate reaches a consumer


@given(text=st.text(max_size=60) | json_values.map(json.dumps))
def test_decode_stream_never_raises(text):
    found = decode_stream(text)
    record("envelope:decode_stream", "stream" if found else "plain")
    if found is not None:
        name, _ = found
        assert isinstance(name, str) and 0 < len(name) <= 100
