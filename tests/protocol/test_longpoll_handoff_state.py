"""A session's snapshot, restore and hand-off message: what moves between processes at a restart."""

from __future__ import annotations

import msgpack
import pytest

from wsbridge.exceptions import Forbidden
from wsbridge.protocol.envelope import Frame
from wsbridge.protocol.longpoll import (
    HandOff,
    LocalProtocolError,
    LongPollSession,
    SessionState,
    TokenSigner,
    handoff_channel,
    new_session_id,
    session_group,
)


def open_session(**kwargs) -> LongPollSession:
    session = LongPollSession(new_session_id(), now=0.0, **kwargs)
    session.accept("chat")
    return session


def through_msgpack(obj):
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


def test_a_restored_session_goes_on_with_the_same_numbers_and_unacked_frames():
    old = open_session()
    for text in ("a", "b", "c"):
        old.queue(text=text)
    old.queue(data=b"\x00\xff")
    old.ack(2)
    old.receive([Frame(1, text="x"), Frame(2, text="y")])
    new = LongPollSession.restore(old.sid, through_msgpack(old.snapshot()), now=100.0)
    assert new.state is SessionState.OPEN and new.subprotocol == "chat"
    assert new.pending() == old.pending() == [Frame(3, text="c"), Frame(4, data=b"\x00\xff")]
    assert new.acked == 2 and new.client_seq == 2
    assert new.queue(text="d") == Frame(5, text="d")  # the server's numbering goes on
    assert new.receive([Frame(2, text="y"), Frame(3, text="z")]) == [Frame(3, text="z")]
    new.ack(5)
    assert not new.has_pending
    assert not new.expired(100.0 + new.timeout)  # the silence clock restarted at restore


def test_a_closing_session_moves_with_its_close_frame_last():
    old = open_session()
    old.queue(text="bye")
    old.queue_close(4001, "done")
    new = LongPollSession.restore(old.sid, through_msgpack(old.snapshot()), now=0.0)
    assert new.state is SessionState.CLOSING and new.close_code == 4001
    assert new.pending()[-1] == Frame(2, close=4001, reason="done")
    new.ack(2)
    assert new.closed


def test_only_open_or_closing_sessions_can_move():
    connecting = LongPollSession(new_session_id(), now=0.0)
    with pytest.raises(LocalProtocolError):
        connecting.snapshot()
    closed = open_session()
    closed.client_close()
    with pytest.raises(LocalProtocolError):
        closed.snapshot()


def test_a_moved_session_keeps_its_frames_for_a_held_poll_and_takes_nothing_new():
    session = open_session()
    session.queue(text="a")
    session.snapshot()
    session.hand_off()
    assert session.moved and not session.closed
    assert session.queue(text="late") is None
    session.expire()
    session.client_close()
    assert session.state is SessionState.MOVED and [f.text for f in session.pending()] == ["a"]
    assert not session.expired(10_000.0)


@pytest.mark.parametrize(
    "change",
    [
        {"state": "closed"},
        {"state": "nonsense"},
        {"next_seq": "3"},
        {"acked": -1},
        {"buffer": [{"seq": 2, "text": "gap"}]},
        {"buffer": [{"seq": 1, "close": 1000, "reason": ""}, {"seq": 2, "text": "after"}]},
        {"buffer": [{"seq": 1, "what": "?"}]},
        {"subprotocol": 7},
    ],
)
def test_a_malformed_snapshot_is_refused(change):
    old = open_session()
    old.queue(text="a")
    old.queue(text="b")
    snapshot = {**old.snapshot(), **change}
    with pytest.raises(ValueError, match="snapshot"):
        LongPollSession.restore(old.sid, snapshot, now=0.0)


def test_the_hand_off_message_round_trips_and_names_its_channels():
    session = open_session()
    session.queue(text="a")
    signer = TokenSigner(b"k" * 32)
    token = signer.sign(session.sid, "wsbridge.lp.x!1", origin="http://site", user="7")
    handoff = HandOff(
        session.sid,
        "http://site",
        "7",
        (TokenSigner.parse(token).mac,),
        {"path": "/ws/chat/", "headers": [[b"host", b"site"]]},
        session.snapshot(),
        "wsbridge.lp.x!1",
    )
    again = HandOff.from_message(through_msgpack(handoff.to_message()))
    assert again == handoff
    TokenSigner.verify_known(TokenSigner.parse(token), again.known())
    other = signer.sign(session.sid, "wsbridge.lp.x!1", origin="http://evil", user="7")
    with pytest.raises(Forbidden):
        TokenSigner.verify_known(TokenSigner.parse(other), again.known())
    assert handoff_channel(session.sid) == "wsbridge.lp.handoff." + session.sid.hex()
    assert session_group(session.sid) == "wsbridge.lp.s." + session.sid.hex()


@pytest.mark.parametrize(
    "change",
    [
        {"type": "lp.request"},
        {"v": 2},
        {"sid": b"short"},
        {"macs": ["text"]},
        {"scope": []},
        {"origin": None},
    ],
)
def test_a_hand_off_message_of_another_shape_is_refused(change):
    session = open_session()
    good = HandOff(session.sid, "", "", (), {}, session.snapshot()).to_message()
    with pytest.raises(ValueError):
        HandOff.from_message({**good, **change})
