"""The connection contract: every transition of the table, allowed or forbidden."""

from __future__ import annotations

import itertools

import pytest

from wsbridge.protocol.closecodes import CloseCode
from wsbridge.protocol.connection import (
    TRANSITIONS,
    Accept,
    Close,
    CloseFrame,
    ConnectionContract,
    ContractError,
    Crash,
    Disconnected,
    Message,
    Opened,
    Refuse,
    Refused,
    Send,
    Shutdown,
    State,
    Wire,
    from_asgi,
    refusal_for,
    to_asgi,
)

EVENTS = {
    Accept: Accept("v1", ((b"x-extra", b"1"),)),
    Send: Send(text="hi"),
    Close: Close(4001, "bye"),
    Refuse: Refuse(CloseCode.NORMAL),
    Crash: Crash("boom"),
    Shutdown: Shutdown(CloseCode.GOING_AWAY),
    Disconnected: Disconnected(1000),
}

#: What each wire meaning puts out, as output types.
WIRE_OUTPUTS = {
    Wire.NOTHING: [],
    Wire.OPEN: [Opened],
    Wire.OPEN_AND_SEND: [Opened, Message],
    Wire.SEND: [Message],
    Wire.REFUSE: [Refused],
    Wire.CLOSE: [CloseFrame],
}

#: How to reach each state from a fresh contract.
PATHS: dict[State, list[object]] = {
    State.CONNECTING: [],
    State.OPEN: [Accept()],
    State.CLOSING: [Accept(), Close()],
    State.REFUSED: [Close()],
    State.CLOSED: [Disconnected()],
}


def in_state(state: State) -> ConnectionContract:
    contract = ConnectionContract()
    for event in PATHS[state]:
        contract.send(event)  # type: ignore[arg-type]
    assert contract.state is state
    return contract


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(State, EVENTS)))
def test_every_pair_of_state_and_event_follows_the_table(state, kind):
    contract = in_state(state)
    rule = TRANSITIONS.get((state, kind))
    if rule is None:
        with pytest.raises(ContractError, match=f"{kind.__name__} is not allowed in state"):
            contract.send(EVENTS[kind])
        assert contract.state is state, "a refused event changes nothing"
        return
    outputs = contract.send(EVENTS[kind])
    assert contract.state is rule[0]
    assert [type(o) for o in outputs] == WIRE_OUTPUTS[rule[1]]


def test_the_only_forbidden_event_is_a_refusal_after_the_decision():
    forbidden = {pair for pair in itertools.product(State, EVENTS) if pair not in TRANSITIONS}
    assert forbidden == {(s, Refuse) for s in State if s is not State.CONNECTING}


def test_accept_answers_the_handshake_with_the_subprotocol_and_headers():
    contract = ConnectionContract()
    assert contract.send(Accept("v2", ((b"x", b"1"),))) == (Opened("v2", ((b"x", b"1"),)),)
    assert contract.accepted and contract.decided
    assert contract.send(Accept("v3")) == ()  # accepted twice: ignored


def test_a_first_message_accepts_implicitly():
    contract = ConnectionContract()
    assert contract.send(Send(data=b"\x00")) == (Opened(implicit=True), Message(data=b"\x00"))
    assert contract.state is State.OPEN and contract.accepted


@pytest.mark.parametrize(
    ("event", "status", "code", "close_code"),
    [
        (Close(), 403, 1000, 1008),  # a refusal is never a normal close
        (Close(4001, "no"), 403, 4001, 4001),
        (Refuse(CloseCode.NORMAL), 403, 1000, 1008),  # connect() did not decide
        (Refuse(), 403, 1008, 1008),  # an identity or recovery limit
        (Crash("x"), 500, 1011, 1011),
        (Shutdown(CloseCode.GOING_AWAY), 503, 1001, 1001),
        (Shutdown(CloseCode.SERVICE_RESTART), 403, 1012, 1012),
    ],
)
def test_a_decision_before_accept_is_an_http_refusal(event, status, code, close_code):
    contract = ConnectionContract()
    (refused,) = contract.send(event)
    assert isinstance(refused, Refused)
    assert (refused.status, refused.code, refused.close_code) == (status, code, close_code)
    assert contract.refusal == refused == refusal_for(event)
    assert not contract.accepted and contract.state is State.REFUSED
    assert contract.send(Send(text="late")) == ()  # dropped, as on a closed socket


def test_after_accept_a_crash_closes_with_1011_and_a_close_carries_its_code():
    crashed = in_state(State.OPEN)
    assert crashed.send(Crash()) == (CloseFrame(1011, crashed=True),)
    closed = in_state(State.OPEN)
    assert closed.send(Close(4403, "revoked", revoked=True)) == (
        CloseFrame(4403, "revoked", revoked=True),
    )
    assert closed.close_code == 4403 and closed.accepted
    assert closed.send(Send(text="late")) == () and closed.send(Close()) == ()
    assert closed.send(Disconnected(1000)) == () and closed.state is State.CLOSED


def test_disconnecting_twice_is_harmless():
    contract = ConnectionContract()
    contract.send(Disconnected())
    assert contract.send(Disconnected()) == () and contract.state is State.CLOSED


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "websocket.accept"}, Accept()),
        (
            {"type": "websocket.accept", "subprotocol": "v2", "headers": [(b"a", b"b")]},
            Accept("v2", ((b"a", b"b"),)),
        ),
        ({"type": "websocket.send", "text": "t"}, Send(text="t")),
        ({"type": "websocket.send", "bytes": b"b"}, Send(data=b"b")),
        ({"type": "websocket.close"}, Close()),
        ({"type": "websocket.close", "code": 4001, "reason": "r"}, Close(4001, "r")),
        ({"type": "websocket.close", "code": 4403, "revoked": True}, Close(4403, revoked=True)),
        ({"type": "http.response.start", "status": 200}, None),
    ],
)
def test_from_asgi_reads_the_consumers_events(event, expected):
    assert from_asgi(event) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (Opened("v2"), {"type": "websocket.accept", "subprotocol": "v2"}),
        (
            Opened(None, ((b"x", b"1"),)),
            {"type": "websocket.accept", "subprotocol": None, "headers": [(b"x", b"1")]},
        ),
        (Opened(implicit=True), None),
        (Message(text="t"), {"type": "websocket.send", "text": "t"}),
        (Message(data=b"b"), {"type": "websocket.send", "bytes": b"b"}),
        (refusal_for(Crash()), {"type": "websocket.close", "code": 1011, "error": True}),
        (refusal_for(Refuse(1000)), {"type": "websocket.close", "code": 1000, "denied": True}),
        (refusal_for(Close(4001, "r")), {"type": "websocket.close", "code": 4001, "reason": "r"}),
        (CloseFrame(1011, crashed=True), {"type": "websocket.close", "code": 1011, "error": True}),
        (
            CloseFrame(4409, "op", revoked=True),
            {"type": "websocket.close", "code": 4409, "reason": "op", "revoked": True},
        ),
    ],
)
def test_to_asgi_gives_a_plain_send_callable_the_dicts_it_always_got(output, expected):
    assert to_asgi(output) == expected


def test_the_contract_imports_nothing_of_wsbridge_outside_protocol():
    import ast
    from pathlib import Path

    import wsbridge.protocol.connection as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = [
        (node.level, node.module)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.level or "wsbridge" in (node.module or ""))
    ]
    assert imported == [(1, "closecodes")]


def render_table() -> str:
    """The docs' table of the contract: every transition that does something."""
    rows = [
        (state.value, kind.__name__, after.value, wire.value)
        for (state, kind), (after, wire) in TRANSITIONS.items()
        if state in (State.CONNECTING, State.OPEN)
    ]
    head = ("state", "event", "next state", "on the wire")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([rule, line(head), rule, *map(line, rows), rule])


def test_the_docs_draw_the_contract_from_the_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs/topics/protocol.rst").read_text()
    assert render_table() in text, (
        "docs/topics/protocol.rst: the connection-contract table differs from TRANSITIONS; "
        "regenerate it with python tests/protocol/test_connection.py"
    )
    # The states left out of the table only drop late events (and end on Disconnected).
    for (state, kind), (after, wire) in TRANSITIONS.items():
        if state not in (State.CONNECTING, State.OPEN):
            assert wire is Wire.NOTHING and after in (state, State.CLOSED), (state, kind)


def test_the_dicts_carry_plain_ints_as_they_always_did():
    for output in (refusal_for(Crash()), refusal_for(Refuse()), CloseFrame(CloseCode.NORMAL)):
        event = to_asgi(output)
        assert event is not None and type(event["code"]) is int


if __name__ == "__main__":
    print(render_table())
