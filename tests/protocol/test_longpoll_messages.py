"""The messages between server processes: lp.request, lp.reply, lp.departed (and their reading)."""

from __future__ import annotations

import msgpack
import pytest

from wsbridge.protocol import longpoll, longpoll_messages, longpoll_token
from wsbridge.protocol.longpoll_messages import (
    OWNER_PREFIX,
    PEERS_GROUP,
    Departed,
    RelayReply,
    RelayRequest,
    ReplyKind,
)


def through_msgpack(obj):
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


def test_a_relayed_request_keeps_its_documented_wire_format():
    request = RelayRequest(
        "poll", {"token": "t", "ack": 3}, "http://a", "7", "wsbridge.lp.x!y", "r1"
    )
    message = through_msgpack(request.to_message())
    assert message == {
        "type": "lp.request",
        "op": "poll",
        "body": {"token": "t", "ack": 3},
        "origin": "http://a",
        "user": "7",
        "reply": "wsbridge.lp.x!y",
        "rid": "r1",
    }
    assert RelayRequest.from_message(message) == request


def test_a_relayed_request_with_missing_fields_reads_as_empty_ones_for_the_owner_to_refuse():
    request = RelayRequest.from_message({"type": "lp.request", "body": ["not", "a", "dict"]})
    assert (request.body, request.origin, request.user) == ({}, "", "")


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (RelayReply("r", ReplyKind.HOLD), {"type": "lp.reply", "rid": "r", "hold": True}),
        (RelayReply("r", ReplyKind.MOVED), {"type": "lp.reply", "rid": "r", "moved": True}),
        (
            RelayReply("r", ReplyKind.ANSWER, 410, {"error": "gone"}),
            {"type": "lp.reply", "rid": "r", "status": 410, "body": {"error": "gone"}},
        ),
    ],
)
def test_each_kind_of_reply_round_trips_in_its_documented_format(reply, wire):
    assert reply.to_message() == wire
    assert RelayReply.from_message(through_msgpack(wire)) == reply


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "lp.reply", "rid": "r"},
        {"type": "lp.reply", "rid": "r", "status": "200", "body": {}},
        {"type": "lp.reply", "rid": "r", "status": 200, "body": []},
    ],
)
def test_a_reply_that_is_no_hold_no_move_and_no_answer_is_a_value_error(bad):
    with pytest.raises(ValueError, match="malformed lp.reply"):
        RelayReply.from_message(bad)


def test_a_departure_names_the_process_going_away():
    message = Departed("wsbridge.lp.a!b").to_message()
    assert message == {"type": "lp.departed", "owner": "wsbridge.lp.a!b"}
    assert Departed.from_message(message).owner == "wsbridge.lp.a!b"
    assert Departed.from_message({"type": "lp.departed"}).owner == ""


def test_the_channel_names_are_the_documented_ones():
    sid = bytes(range(16))
    assert OWNER_PREFIX == "wsbridge.lp" and PEERS_GROUP == "wsbridge.lp.peers"
    assert longpoll_messages.handoff_channel(sid) == "wsbridge.lp.handoff." + sid.hex()
    assert longpoll_messages.session_group(sid) == "wsbridge.lp.s." + sid.hex()


def test_the_moved_names_are_still_importable_from_protocol_longpoll():
    assert longpoll.TokenSigner is longpoll_token.TokenSigner
    assert longpoll.Token is longpoll_token.Token
    assert longpoll.new_session_id is longpoll_token.new_session_id
    assert longpoll.SESSION_ID_BYTES == longpoll_token.SESSION_ID_BYTES == 16
    assert longpoll.HandOff is longpoll_messages.HandOff
    assert longpoll.HANDOFF_VERSION == longpoll_messages.HANDOFF_VERSION
    assert longpoll.handoff_channel is longpoll_messages.handoff_channel
    assert longpoll.session_group is longpoll_messages.session_group
    assert longpoll.MAX_SESSION_MACS == longpoll_messages.MAX_SESSION_MACS
