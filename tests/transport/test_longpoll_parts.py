"""The parts of wsbridge.transport.longpoll, one at a time, on a real in-memory layer.

The session table remembers why a session is gone; the relay returns what
became of a request (and never runs one); the consumer side follows the
connection contract. The whole graph is exercised over HTTP by
test_longpoll*.py and, across processes, by test_longpoll_handoff.py.
"""

from __future__ import annotations

import gevent
import gevent.event
import pytest

from wsbridge.exceptions import Forbidden, Gone, NotFound
from wsbridge.layers.memory import MemoryLayer
from wsbridge.protocol.closecodes import CloseCode
from wsbridge.protocol.connection import (
    Accept,
    Close,
    ConnectionContract,
    Crash,
    Event,
    Refuse,
    Send,
)
from wsbridge.protocol.longpoll import LongPollSession, SessionState
from wsbridge.protocol.longpoll_messages import OWNER_PREFIX, RelayRequest
from wsbridge.protocol.longpoll_token import Token, TokenSigner, new_session_id
from wsbridge.transport.longpoll.consumer import ConsumerSide
from wsbridge.transport.longpoll.relay import Outcome, Relay, Request, Result
from wsbridge.transport.longpoll.sessions import Session, SessionTable


def new_session(**fields) -> Session:
    return Session(LongPollSession(new_session_id(), now=0.0), **fields)


# -- the session table -------------------------------------------------------------------


def test_the_table_says_why_a_session_it_does_not_hold_is_missing():
    table = SessionTable()
    ended, moved, revoked = new_session(), new_session(), new_session()
    for session in (ended, moved, revoked):
        table.add(session)
    assert len(table) == 3 and ended.state.sid in table
    assert table.remove(ended) and table.remove(moved, moved=True)
    table.revoke(revoked.state.sid, "connection closed (4403): logged out")
    table.remove(revoked)
    assert not table.remove(ended)  # only once
    assert isinstance(table.missing(ended.state.sid, signed_here=True), Gone)
    assert isinstance(table.missing(ended.state.sid, signed_here=False), NotFound)
    assert table.was_moved(moved.state.sid) and not table.was_moved(ended.state.sid)
    why = table.missing(revoked.state.sid, signed_here=False)
    assert isinstance(why, Gone) and "logged out" in why.reason
    assert isinstance(table.missing(new_session_id(), signed_here=True), NotFound)


def test_adopting_a_session_back_forgets_that_it_had_moved_and_old_entries_are_pruned():
    table = SessionTable()
    session = new_session()
    table.add(session)
    table.remove(session, moved=True)
    table.add(session)
    assert not table.was_moved(session.state.sid) and table.get(session.state.sid) is session
    table.remove(session)
    table.prune(now=float("inf"), keep=600.0)
    assert not table.tombstones and not table.moved


def test_a_session_remembers_its_last_tokens_newest_first():
    signer = TokenSigner(b"k" * 32)
    session = new_session()
    tokens = [signer.sign(session.state.sid, f"wsbridge.lp.p!{n}") for n in range(6)]
    for token in tokens:
        session.use_token(token)
    assert session.token == tokens[-1]
    assert [owner for owner, _ in session.known] == [f"wsbridge.lp.p!{n}" for n in (5, 4, 3, 2)]


# -- the relay ---------------------------------------------------------------------------


class SharedMemoryLayer(MemoryLayer):
    """Two relays in one process: the memory layer, declared shared for the relay's check."""

    extensions = (*MemoryLayer.extensions, "shared")


def serving(layer, answer):
    """A relay for an owner channel whose requests ``answer(RelayRequest)`` decides."""
    relay = Relay(layer, layer.new_channel(OWNER_PREFIX), verify=None, **TIMEOUTS)
    served = []

    def run(request: RelayRequest) -> None:
        relay.hold(request)
        served.append(request)
        relay.answer(request, answer(request))

    def on_message(message):
        request = relay.receive(message)
        if request is not None:
            gevent.spawn(run, request)

    layer.attach(relay.owner, on_message)
    return relay, served


def asking(layer):
    relay = Relay(layer, layer.new_channel(OWNER_PREFIX), verify=None, **TIMEOUTS)
    layer.attach(relay.owner, relay.receive)  # replies only: nothing comes back to run
    return relay


TIMEOUTS = {"forward_timeout": 0.5, "poll_timeout": 0.5}
POLL = Request("poll", {"token": "t", "ack": 0}, "http://a", "")


def test_the_owner_answer_comes_back_as_forwarded_and_marks_it_alive():
    layer = SharedMemoryLayer()
    owner, served = serving(layer, lambda r: Result(Outcome.LOCAL, 200, {"messages": []}))
    asker = asking(layer)
    result = asker.forward(owner.owner, POLL)
    assert result == Result(Outcome.FORWARDED, 200, {"messages": []})
    assert served[0].op == "poll" and served[0].reply == asker.owner
    assert asker.known_alive(owner.owner) and not asker.departed(owner.owner)


def test_an_owner_that_handed_the_session_over_answers_moved_and_counts_as_departed():
    layer = SharedMemoryLayer()
    owner, _ = serving(layer, lambda r: Result(Outcome.MOVED))
    asker = asking(layer)
    assert asker.forward(owner.owner, POLL).outcome is Outcome.MOVED
    assert asker.departed(owner.owner) and not asker.known_alive(owner.owner)


def test_an_owner_that_does_not_answer_is_gone_and_nobody_else_is_asked():
    layer = SharedMemoryLayer()
    asker = asking(layer)
    silent = layer.new_channel(OWNER_PREFIX)
    layer.attach(silent, lambda message: None)
    assert asker.forward(silent, POLL).outcome is Outcome.GONE
    assert asker.ask_adopter(new_session_id(), POLL).outcome is Outcome.GONE


def test_a_departure_is_heard_and_a_leaving_process_releases_its_own_held_polls():
    layer = SharedMemoryLayer()
    leaving, listener = asking(layer), asking(layer)
    leaving.join_peers()
    listener.join_peers()
    held = layer.new_channel(OWNER_PREFIX)  # holds the poll: a hold, then nothing
    layer.attach(held, lambda m: gevent.spawn(hold_only, layer, m))
    poll = gevent.spawn(leaving.forward, held, POLL)
    gevent.sleep(0.1)
    leaving.depart()
    assert poll.get(timeout=2) == Result(Outcome.FORWARDED, 200, {"messages": []})
    gevent.sleep(0.05)
    assert listener.departed(leaving.owner)


def hold_only(layer, message):
    relay = Relay(layer, "unused", verify=None, **TIMEOUTS)
    relay.hold(RelayRequest.from_message(message))


def test_the_relay_refuses_what_no_other_process_can_answer():
    signer = TokenSigner(b"s" * 32)
    token = TokenSigner.parse(signer.sign(new_session_id(), "wsbridge.lp.p!1", origin="http://a"))
    not_shared = Relay(MemoryLayer(), "wsbridge.lp.me!1", verify=None, **TIMEOUTS)
    with pytest.raises(NotFound, match="server process is gone"):
        not_shared.check(token, POLL)
    shared = Relay(SharedMemoryLayer(), "wsbridge.lp.me!1", verify=signer.verify, **TIMEOUTS)
    shared.check(token, POLL)  # the same secret, Origin and user: allowed
    with pytest.raises(Forbidden):
        shared.check(token, Request("poll", {}, "http://evil", ""))
    foreign = Token(token.sid, "elsewhere", token.mac)
    with pytest.raises(NotFound):
        Relay(SharedMemoryLayer(), "me", verify=None, **TIMEOUTS).check(foreign, POLL)


# -- the consumer side: the connection contract ---------------------------------------------


def consumer_side():
    table = SessionTable()
    return ConsumerSide(MemoryLayer(), "wsbridge.lp.me!1", table), table


def emit(side: ConsumerSide, session: Session, *events: Event) -> None:
    """What the runner does: each event through the consumer's contract, outputs applied."""
    contract = ConnectionContract()
    for event in events:
        for output in contract.send(event):
            side.apply(session, output)


def test_a_send_before_accept_opens_the_session_and_queues_the_message():
    side, table = consumer_side()
    session = new_session()
    table.add(session)
    emit(side, session, Send(text="hi"))
    assert session.state.state is SessionState.OPEN and session.handshake.is_set()
    assert [frame.text for frame in session.state.pending()] == ["hi"]


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (Close(4001), 403),
        (Refuse(1000), 403),
        (Crash("boom"), 500),
    ],
)
def test_a_close_before_accept_refuses_the_open_with_the_contract_status(event, status):
    side, table = consumer_side()
    session = new_session()
    table.add(session)
    emit(side, session, event)
    assert session.refusal == status and session.state.state is SessionState.CLOSED
    assert session.handshake.is_set()


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (Refuse(1000), CloseCode.POLICY_VIOLATION),
        (Close(1000), CloseCode.POLICY_VIOLATION),
        (Close(4001), 4001),
        (Crash("boom"), CloseCode.INTERNAL_ERROR),
    ],
)
def test_a_refusal_on_resume_is_a_close_frame_for_the_client_holding_the_session(event, code):
    side, table = consumer_side()
    state = LongPollSession(new_session_id(), now=0.0)
    state.accept(None)  # restored open: the new consumer instance has not decided yet
    session = Session(state, resumed=True)
    table.add(session)
    emit(side, session, event)
    assert state.state is SessionState.CLOSING and state.close_code == code
    assert type(state.close_code) is int  # a plain int: it may be handed over again


def test_a_revoked_close_ends_the_session_and_leaves_its_reason_for_later_polls():
    side, table = consumer_side()
    session = new_session()
    table.add(session)
    emit(side, session, Accept(), Close(4403, "logged out", revoked=True))
    gevent.sleep(0)  # the end runs in its own greenlet
    assert session.state.sid not in table
    assert table.revoked(session.state.sid) == "connection closed (4403): logged out"


def test_a_close_while_the_session_is_being_handed_over_is_not_the_sessions_end():
    side, table = consumer_side()
    session = new_session()
    table.add(session)
    contract = ConnectionContract()
    for output in contract.send(Accept()):
        side.apply(session, output)
    session.moving = gevent.event.Event()
    for output in contract.send(Close(1012)):
        side.apply(session, output)
    assert session.state.state is SessionState.OPEN


# -- the transport: one LongPollProcess per OS process ---------------------------------------


def test_the_per_process_state_is_built_once_on_first_use_and_again_after_close():
    import lp_app

    from wsbridge.testing import use_channel_layer
    from wsbridge.transport.wsgi import wrap

    with use_channel_layer() as layer:
        transport = wrap(lp_app.application, router=lp_app.routes, layer=layer).longpoll_transport
        assert transport.owner == "" and transport.sessions == {}  # nothing built yet
        assert transport.release_sessions() == 0
        process = transport.process
        assert transport.process is process and transport.owner == process.owner
        assert process.owner.startswith(OWNER_PREFIX + ".")
        assert not transport.can_hand_off()  # the memory layer is not shared across processes
        transport.close()
        assert transport.owner == ""
        assert transport.process is not process
        transport.close()


def test_sessions_move_on_shutdown_when_the_layer_says_it_is_shared_or_the_option_says_so():
    from wsbridge.transport.longpoll import LongPollTransport

    cases = [(SharedMemoryLayer(), {}, True), (SharedMemoryLayer(), {"handoff": False}, False)]
    cases.append((MemoryLayer(), {"handoff": True}, True))
    for layer, options, moves in cases:
        transport = LongPollTransport(layer=layer, **options)
        assert transport.process.mover.enabled is moves and transport.can_hand_off() is moves
        transport.close()


def test_a_restarting_process_answers_503_for_a_session_it_cannot_adopt_not_404():
    # gunicorn's SIGHUP: worker A hands its sessions over and worker B, also
    # leaving, takes the client's next poll. B adopts nothing, so it must send
    # the client on (503: retry) to a process that stays, not end the session.
    import lp_app

    from wsbridge.transport.longpoll import LongPollTransport

    layer = SharedMemoryLayer()
    options = {"secret": "shared-secret-0123456789", "forward_timeout": 0.5}
    a, b, c = (LongPollTransport(lp_app.routes, layer, **options) for _ in range(3))
    try:
        scope = {"type": "websocket", "path": "/ws/echo/", "query_string": b"", "headers": []}
        match = lp_app.routes.resolve("websocket", "/ws/echo/")
        scope["url_route"] = match.url_route
        status, opened = a.process.open(scope, match.consumer, origin="", user="", ip="")
        assert status == 200
        poll = Request("poll", {"token": opened["token"], "ack": 0, "wait": 0}, "", "")
        b.process.mover.hand_off_all(1.0)  # B is leaving (it held nothing)
        assert a.process.mover.hand_off_all(5.0) == 1
        assert b.process.run(poll) == (503, {"error": "this server process is restarting: retry"})
        status, answer = c.process.run(poll)  # a process that stays adopts it
        assert status == 200 and answer["token"] != opened["token"]
    finally:
        for transport in (a, b, c):
            transport.close()
