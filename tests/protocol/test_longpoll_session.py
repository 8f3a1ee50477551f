"""Long-poll session state: seq, acks, retried sends, buffer bound, expiry, tokens."""

from __future__ import annotations

import pytest

from wsbridge.exceptions import BadRequest, Forbidden
from wsbridge.protocol.envelope import Frame
from wsbridge.protocol.longpoll import (
    TRANSITIONS,
    LocalProtocolError,
    LongPollSession,
    SessionState,
    TokenSigner,
    new_session_id,
    transition_rows,
)


def open_session(**kwargs) -> LongPollSession:
    session = LongPollSession(new_session_id(), now=0.0, **kwargs)
    session.accept("chat")
    return session


def test_frames_stay_until_acked_so_a_lost_poll_response_is_delivered_again():
    session = open_session()
    session.queue(text="a")
    session.queue(data=b"b")
    first = session.pending()
    assert [f.seq for f in first] == [1, 2]
    # the response to that poll is lost: the next poll acks 0 and sees the same frames
    session.ack(0)
    assert session.pending() == first
    session.ack(1)
    session.queue(text="c")
    assert [f.seq for f in session.pending()] == [2, 3]
    session.ack(3)
    assert session.pending() == []
    session.ack(2)  # a stale retried poll changes nothing
    assert session.acked == 3


def test_an_ack_beyond_the_last_frame_is_a_bad_request():
    session = open_session()
    session.queue(text="a")
    with pytest.raises(BadRequest, match="beyond"):
        session.ack(2)
    with pytest.raises(BadRequest):
        session.ack(-1)


def test_retried_sends_are_applied_once_and_gaps_refused():
    session = open_session()
    assert [f.text for f in session.receive([Frame(1, text="a"), Frame(2, text="b")])] == ["a", "b"]
    assert session.receive([Frame(1, text="a"), Frame(2, text="b")]) == []
    assert [f.text for f in session.receive([Frame(2, text="b"), Frame(3, text="c")])] == ["c"]
    assert session.client_seq == 3
    with pytest.raises(BadRequest, match="skips ahead"):
        session.receive([Frame(5, text="e")])
    assert session.client_seq == 3


def test_a_full_buffer_closes_with_1013():
    session = open_session(max_buffer=2)
    session.queue(text="a")
    session.queue(text="b")
    close = session.queue(text="c")
    assert close is not None and close.is_close and close.close == 1013
    assert session.state is SessionState.CLOSING
    assert session.queue(text="d") is None
    assert [f.seq for f in session.pending()] == [1, 2, 3]


def test_the_byte_bound_counts_payloads():
    session = open_session(max_buffer_bytes=10)
    assert not session.queue(text="12345").is_close
    assert not session.queue(data=b"12345").is_close
    assert session.queue(text="x").is_close
    session.ack(2)


def test_acking_the_close_frame_closes_the_session():
    session = open_session()
    session.queue(text="a")
    close = session.queue_close(4001, "bye")
    assert session.state is SessionState.CLOSING
    assert session.receive([Frame(1, text="late")]) == []  # dropped like after a WS close
    session.ack(close.seq)
    assert session.closed


def test_silence_expires_the_session_but_a_parked_poll_does_not():
    session = open_session(timeout=10)
    session.request_started(1.0)
    assert not session.expired(100.0)
    session.request_ended(100.0)
    assert not session.expired(110.0)
    assert session.expired(110.5)
    session.expire()
    assert session.closed and not session.expired(1000.0)


def test_illegal_moves_are_the_callers_bug():
    session = LongPollSession(new_session_id(), now=0)
    with pytest.raises(LocalProtocolError):
        session.queue(text="before accept")
    with pytest.raises(LocalProtocolError):
        session.queue_close(1000)
    session.refuse()
    assert session.closed
    with pytest.raises(LocalProtocolError):
        session.accept()


def test_every_state_is_reachable_in_the_table():
    targets = {b for b in TRANSITIONS.values()} | {SessionState.CONNECTING}
    assert targets == set(SessionState)
    assert ("connecting", "Accept", "open") in transition_rows()


def test_tokens_are_bound_to_origin_and_user_and_unforgeable():
    signer = TokenSigner(b"k" * 32)
    sid = new_session_id()
    assert len(sid) * 8 >= 128
    token = signer.sign(sid, "wsbridge.lp.abc!def", origin="http://a.test", user="7")
    parsed = signer.parse(token)
    assert parsed.sid == sid and parsed.owner == "wsbridge.lp.abc!def"
    signer.verify(parsed, origin="http://a.test", user="7")
    with pytest.raises(Forbidden):
        signer.verify(parsed, origin="http://evil.test", user="7")
    with pytest.raises(Forbidden):
        signer.verify(parsed, origin="http://a.test", user="8")
    with pytest.raises(Forbidden):
        TokenSigner(b"o" * 32).verify(parsed, origin="http://a.test", user="7")
    forged = signer.parse(signer.sign(new_session_id(), parsed.owner, origin="x"))
    with pytest.raises(Forbidden):
        signer.verify(forged, origin="http://a.test", user="7")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", 42, None, "x" * 500, "!!.!!.!!"])
def test_malformed_tokens_are_bad_requests(token):
    with pytest.raises(BadRequest):
        TokenSigner.parse(token)
