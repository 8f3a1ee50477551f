"""The execution model: one mailbox per connection (wsbridge.consumers.runner.Connection).

How ordering per connection is tested
-------------------------------------
Socket events reach a connection through ``Connection.push`` and layer
messages through the layer calling the connection's ``attach`` callback;
neither call yields to another greenlet (unless backpressure makes ``push``
wait, which these tests stay below), so the order in which the test makes
the calls *is* the arrival order. Each test records that order in an
``arrivals`` list right after each call, from one or several greenlets that
interleave with ``gevent.sleep(0)``, and the consumer records every event it
handles, in a ``handled`` list. The tests then assert ``handled ==
arrivals`` exactly (not just per source), that no two handlers of one
connection ever overlap (a counter of handlers in progress never exceeds 1,
even when handlers block), and that the frames the consumer sends come out
in the same order.
"""

from __future__ import annotations

import logging
import socket
import time

import gevent
import gevent.socket
import pytest
from gevent.event import Event

from wsbridge import WebsocketConsumer
from wsbridge.consumers.runner import TRANSPORT_HIGH_WATER, Connection
from wsbridge.exceptions import ChannelFull
from wsbridge.testing import Communicator, build_websocket_scope


class Recorder(WebsocketConsumer):
    """Records every event it handles; echoes frames; optionally blocks in handlers."""

    handled: list[str]
    in_progress = 0
    max_in_progress = 0
    pause = 0.0

    def _enter(self, label: str) -> None:
        cls = type(self)
        cls.in_progress += 1
        cls.max_in_progress = max(cls.max_in_progress, cls.in_progress)
        if self.pause:
            gevent.sleep(self.pause)  # a handler that blocks (cooperatively)
        cls.handled.append(label)
        cls.in_progress -= 1

    def receive(self, text_data=None, bytes_data=None):
        self._enter(text_data)
        self.send(text_data=text_data)

    def note(self, event):
        self._enter(event["label"])
        self.send(text_data=event["label"])


def recorder(pause: float = 0.0) -> type[Recorder]:
    return type(
        "Rec", (Recorder,), {"handled": [], "pause": pause, "in_progress": 0, "max_in_progress": 0}
    )


def test_socket_events_and_layer_messages_are_handled_in_arrival_order(layer):
    """One greenlet alternates frames and layer messages; a handler blocks each time."""
    cls = recorder(pause=0.002)
    comm = Communicator(cls, "/")
    comm.connect()
    arrivals = []
    for i in range(30):
        if i % 3 == 0:
            layer.send(comm.channel_name, {"type": "note", "label": f"L{i}"})
            arrivals.append(f"L{i}")
        else:
            comm.send_to(text_data=f"S{i}")
            arrivals.append(f"S{i}")
    sent = [comm.receive_from() for _ in arrivals]
    assert cls.handled == arrivals
    assert sent == arrivals
    assert cls.max_in_progress == 1
    comm.disconnect()


def test_order_holds_with_concurrent_producers(layer):
    """Three greenlets (socket reader, a group sender, a direct sender) interleave."""
    cls = recorder(pause=0.001)
    comm = Communicator(cls, "/")
    comm.connect()
    layer.group_add("g", comm.channel_name)
    arrivals: list[str] = []

    def frames():
        for i in range(40):
            comm.send_to(text_data=f"S{i}")
            arrivals.append(f"S{i}")
            gevent.sleep(0)

    def group():
        for i in range(40):
            layer.group_send("g", {"type": "note", "label": f"G{i}"})
            arrivals.append(f"G{i}")
            gevent.sleep(0)

    def direct():
        for i in range(40):
            layer.send(comm.channel_name, {"type": "note", "label": f"D{i}"})
            arrivals.append(f"D{i}")
            gevent.sleep(0.0005 * (i % 3))

    gevent.joinall(
        [gevent.spawn(frames), gevent.spawn(group), gevent.spawn(direct)], raise_error=True
    )
    sent = [comm.receive_from(timeout=5) for _ in range(120)]
    assert cls.handled == arrivals
    assert sent == arrivals
    assert len({a[0] for a in arrivals[:10]}) > 1, "producers did interleave"
    assert cls.max_in_progress == 1
    comm.disconnect()


def _blocking_peer():
    """A TCP server on a free loopback port that answers only when released."""
    listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    release = Event()

    def serve():
        conn, _ = listener.accept()
        release.wait(10)
        conn.sendall(b"done")
        conn.close()

    server = gevent.spawn(serve)
    return listener, release, server


def test_a_consumer_blocked_on_io_does_not_delay_other_connections(layer):
    listener, release, server = _blocking_peer()

    class Slow(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            # Real blocking socket I/O inside a plain synchronous handler.
            with gevent.socket.create_connection(listener.getsockname()) as sock:
                self.send(text_data=sock.recv(10).decode())

    class Fast(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.send(text_data=text_data)

    slow, fast = Communicator(Slow, "/"), Communicator(Fast, "/")
    slow.connect(), fast.connect()
    slow.send_to(text_data="go")
    gevent.sleep(0.01)  # let the slow handler reach recv()
    started = time.monotonic()
    for i in range(20):
        fast.send_to(text_data=str(i))
        assert fast.receive_from() == str(i)
    fast_elapsed = time.monotonic() - started
    assert slow.receive_nothing(0.05), "the slow handler is still blocked"
    release.set()
    assert slow.receive_from(timeout=5) == "done"
    assert fast_elapsed < 1.0, fast_elapsed
    server.join(5)
    listener.close()
    slow.disconnect(), fast.disconnect()


def test_a_raising_consumer_closes_only_its_connection_with_1011_and_logs_once(layer, caplog):
    class Crashy(WebsocketConsumer):
        groups = ["crowd"]

        def receive(self, text_data=None, bytes_data=None):
            if text_data == "boom":
                raise RuntimeError("kaboom in receive")
            self.send(text_data=text_data)

    victim, bystander = Communicator(Crashy, "/a/"), Communicator(Crashy, "/b/")
    victim.connect(), bystander.connect()
    with caplog.at_level(logging.ERROR, logger="wsbridge.consumers"):
        victim.send_to(text_data="boom")
        victim.send_to(text_data="after")  # queued behind the crash: dropped
        event = victim.receive_output()
        assert event == {"type": "websocket.close", "code": 1011, "error": True}
        assert victim.receive_nothing()
        victim.connection.disconnected(1011)  # what the transport does next
        victim.wait()
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 1
    assert "raised handling 'websocket.receive' on '/a/'" in records[0].getMessage()
    assert records[0].exc_info and "kaboom in receive" in caplog.text
    assert caplog.text.count("Traceback") == 1
    # Its group membership is gone; the other connection goes on.
    assert layer.group_channels("crowd") == [bystander.channel_name]
    bystander.send_to(text_data="fine")
    assert bystander.receive_from() == "fine"
    bystander.disconnect()


def test_a_crash_before_accept_asks_the_transport_for_a_500(layer, caplog):
    class BadConnect(WebsocketConsumer):
        def connect(self):
            {}["missing"]

    comm = Communicator(BadConnect, "/")
    comm.connection.push({"type": "websocket.connect"})
    assert comm.receive_output() == {"type": "websocket.close", "code": 1011, "error": True}
    comm.wait()
    assert "KeyError" in caplog.text


def test_backpressure_push_waits_while_the_consumer_is_behind(layer):
    """push() blocks past TRANSPORT_HIGH_WATER queued frames, then resumes in order."""
    gate = Event()
    handled: list[str] = []

    class Stuck(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            gate.wait()
            handled.append(text_data)

    comm = Communicator(Stuck, "/")
    comm.connect()
    pushed: list[int] = []
    total = TRANSPORT_HIGH_WATER * 3

    def reader():
        for i in range(total):
            comm.send_to(text_data=str(i))
            pushed.append(i)

    g = gevent.spawn(reader)
    gevent.sleep(0.05)
    # HIGH_WATER frames were accepted (the first is being handled, stuck); the
    # reader now waits in push(): it would stop reading its socket.
    assert len(pushed) == TRANSPORT_HIGH_WATER
    assert not g.dead
    gate.set()
    g.join(5)
    assert g.dead and len(pushed) == total
    comm.disconnect(timeout=5)
    assert handled == [str(i) for i in range(total)]


def test_layer_messages_past_the_mailbox_size_raise_channel_full(layer):
    gate = Event()
    sent = []

    class Busy(WebsocketConsumer):
        def note(self, event):
            gate.wait()
            sent.append(event["n"])

    scope = build_websocket_scope("/")
    conn = Connection(scope, Busy, layer, lambda event: None, mailbox_size=5)
    conn.push({"type": "websocket.connect"})
    layer.group_add("busy", conn.channel_name)
    for n in range(6):  # 1 being handled + 5 waiting
        layer.send(conn.channel_name, {"type": "note", "n": n})
        gevent.sleep(0)
    with pytest.raises(ChannelFull, match="5 messages waiting"):
        layer.send(conn.channel_name, {"type": "note", "n": 99})
    assert layer.group_send("busy", {"type": "note", "n": 100}) == 1  # skipped, counted
    gate.set()
    conn.disconnected(1000)
    assert conn.wait(5)
    assert sent == list(range(6))


def test_disconnected_is_idempotent_and_never_blocks(layer):
    gate = Event()

    class Stuck(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            gate.wait()

    comm = Communicator(Stuck, "/")
    comm.connect()
    for i in range(TRANSPORT_HIGH_WATER + 1):
        comm.send_to(text_data=str(i))
    started = time.monotonic()
    for _ in range(3):
        comm.connection.disconnected(1006)  # mailbox is full: must still return at once
    assert time.monotonic() - started < 0.5
    gate.set()
    comm.wait(5)
    assert comm.connection.finished.is_set()


def test_events_after_the_end_are_ignored_and_sends_after_close_dropped(layer):
    outputs = []

    class Closer(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.close()
            self.send(text_data="too late")

    conn = Connection(build_websocket_scope("/"), Closer, layer, outputs.append)
    conn.push({"type": "websocket.connect"})
    conn.push({"type": "websocket.receive", "text": "x"})
    conn.disconnected(1000)
    assert conn.wait(5)
    conn.push({"type": "websocket.receive", "text": "ignored"})
    assert [e["type"] for e in outputs] == ["websocket.accept", "websocket.close"]
    assert conn.layer is layer and conn.channel_name not in layer.stats().get("channels", {})


def test_an_idle_connection_holds_no_greenlet(layer):
    comm = Communicator(recorder(), "/")
    comm.connect()
    gevent.sleep(0)
    assert comm.connection._runner is None
    comm.send_to(text_data="x")
    assert comm.connection._runner is not None
    comm.receive_from()
    gevent.sleep(0)
    assert comm.connection._runner is None
    comm.disconnect()


# -- the pump: one greenlet runs the woken mailboxes (see runner's docstring) --


def _connections(layer, consumer_class, count):
    conns = [
        Connection(build_websocket_scope(f"/c{i}/"), consumer_class, layer, lambda event: None)
        for i in range(count)
    ]
    for conn in conns:
        conn.push({"type": "websocket.connect"})
    return conns


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.001)


@pytest.mark.parametrize("how", ["sleep", "socket"])
def test_a_handler_that_blocks_does_not_delay_others_woken_in_the_same_batch(layer, how):
    """The first of 20 connections woken together blocks; the other 19 run meanwhile."""
    if how == "socket":
        listener, release, server = _blocking_peer()
    else:
        release = Event()
    done: list[str] = []

    class Mixed(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            if text_data == "block":
                if how == "sleep":
                    while not release.is_set():
                        gevent.sleep(0.01)
                else:
                    with gevent.socket.create_connection(listener.getsockname()) as sock:
                        sock.recv(10)
            done.append(text_data)

    conns = _connections(layer, Mixed, 20)
    _wait_for(lambda: all(c.accepted for c in conns))
    # All pushed from this greenlet without yielding: one batch for one pump,
    # the blocking connection first in the ready list.
    conns[0].push({"type": "websocket.receive", "text": "block"})
    for i, conn in enumerate(conns[1:], 1):
        conn.push({"type": "websocket.receive", "text": f"fast{i}"})
    _wait_for(lambda: len(done) == 19, timeout=2.0)
    assert "block" not in done and not release.is_set()
    release.set()
    _wait_for(lambda: "block" in done)
    assert done[:19] == [f"fast{i}" for i in range(1, 20)]
    if how == "socket":
        server.join(5)
        listener.close()
    for conn in conns:
        conn.disconnected(1000)
        assert conn.wait(5)


def test_order_per_connection_holds_under_the_pump_with_handoffs(layer):
    """40 connections, three producers, handlers that sometimes block: order holds each."""
    handled: dict[str, list[str]] = {}
    busy: dict[str, int] = {}
    overlaps: list[str] = []

    class Counting(WebsocketConsumer):
        def _record(self, label: str) -> None:
            path = self.scope["path"]
            busy[path] = busy.get(path, 0) + 1
            if busy[path] > 1:
                overlaps.append(path)
            if label.endswith("7"):
                gevent.sleep(0.001)  # blocks: the pump hands the rest over
            handled.setdefault(path, []).append(label)
            busy[path] -= 1

        def receive(self, text_data=None, bytes_data=None):
            self._record(text_data)

        def note(self, event):
            self._record(event["label"])

    conns = _connections(layer, Counting, 40)
    _wait_for(lambda: all(c.accepted for c in conns))
    for conn in conns:
        layer.group_add("all", conn.channel_name)
    arrivals: dict[str, list[str]] = {c.scope["path"]: [] for c in conns}

    def frames():
        for i in range(30):
            for conn in conns:
                conn.push({"type": "websocket.receive", "text": f"S{i}"})
                arrivals[conn.scope["path"]].append(f"S{i}")
            gevent.sleep(0)

    def group():
        for i in range(30):
            layer.group_send("all", {"type": "note", "label": f"G{i}"})
            for conn in conns:
                arrivals[conn.scope["path"]].append(f"G{i}")
            gevent.sleep(0)

    def direct():
        for i in range(30):
            for conn in conns[::3]:
                layer.send(conn.channel_name, {"type": "note", "label": f"D{i}"})
                arrivals[conn.scope["path"]].append(f"D{i}")
            gevent.sleep(0.0005 * (i % 3))

    gevent.joinall(
        [gevent.spawn(frames), gevent.spawn(group), gevent.spawn(direct)], raise_error=True
    )
    _wait_for(lambda: all(len(handled.get(p, ())) == len(a) for p, a in arrivals.items()))
    assert handled == arrivals
    assert not overlaps
    for conn in conns:
        conn.disconnected(1000)
        assert conn.wait(5)


def _greenlets() -> int:
    import gc

    import greenlet

    gc.collect()
    return sum(isinstance(o, greenlet.greenlet) for o in gc.get_objects())


def test_many_wakes_leave_no_greenlet_behind(layer):
    """5,000 wakes (some handlers block, some raise) end with as many greenlets as before."""

    class Churn(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            if text_data.endswith("3"):
                gevent.sleep(0)  # a hand-off: the blocked greenlet must end too
            if text_data == "crash":
                raise RuntimeError("expected by the test")
            self.send(text_data=text_data)

    conns = _connections(layer, Churn, 50)
    _wait_for(lambda: all(c.accepted for c in conns))
    before = _greenlets()
    for i in range(100):
        for conn in conns:
            conn.push({"type": "websocket.receive", "text": str(i)})
        gevent.sleep(0)
    _wait_for(lambda: all(c._runner is None for c in conns))
    conns[0].push({"type": "websocket.receive", "text": "crash"})
    assert conns[0].wait(5) and conns[0].failed
    for conn in conns[1:]:
        conn.disconnected(1000)
        assert conn.wait(5)
    _wait_for(lambda: all(c._runner is None for c in conns))
    gevent.sleep(0.01)
    assert _greenlets() <= before


def test_abort_kills_a_stuck_handler_run_by_the_pump(layer):
    """abort() ends a handler blocked in the (raw) pump greenlet; others keep running."""
    entered, finished_handler = Event(), []

    class Stuck(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            if text_data == "stuck":
                entered.set()
                gevent.sleep(30)
                finished_handler.append(text_data)  # never reached
            self.send(text_data=text_data)

    sent: list[dict] = []
    stuck = Connection(build_websocket_scope("/s/"), Stuck, layer, lambda event: None)
    other = Connection(build_websocket_scope("/o/"), Stuck, layer, sent.append)
    for conn in (stuck, other):
        conn.push({"type": "websocket.connect"})
    stuck.push({"type": "websocket.receive", "text": "stuck"})
    other.push({"type": "websocket.receive", "text": "a"})
    assert entered.wait(5)
    runner = stuck._runner
    stuck.abort()
    assert stuck.finished.is_set()
    _wait_for(lambda: runner.dead)
    assert stuck._runner is None and not finished_handler
    other.push({"type": "websocket.receive", "text": "b"})
    _wait_for(lambda: [e.get("text") for e in sent if "text" in e] == ["a", "b"])
    other.disconnected(1000)
    assert other.wait(5)


def test_consumers_that_keep_waking_each_other_cannot_starve_the_hub(layer):
    """A pump works for a bounded time, then timers and sockets get their turn."""
    ticks: list[int] = []
    volleys = [0]

    class PingPong(WebsocketConsumer):
        def volley(self, event):
            volleys[0] += 1
            if len(ticks) < 5 and volleys[0] < 2_000_000:  # hard bound: never endless
                layer.send(event["to"], {"type": "volley", "to": self.channel_name})

    a, b = _connections(layer, PingPong, 2)
    _wait_for(lambda: a.accepted and b.accepted)

    def ticker():
        while len(ticks) < 5:
            gevent.sleep(0.001)
            ticks.append(volleys[0])

    tick = gevent.spawn(ticker)
    layer.send(a.channel_name, {"type": "volley", "to": b.channel_name})
    tick.join(10)
    assert len(ticks) == 5
    assert ticks[-1] < 2_000_000, "the timers waited for the volley to end"
    assert ticks[0] > 0 and ticks[-1] > ticks[0], "the volley ran between the ticks"
    for conn in (a, b):
        conn.disconnected(1000)
        assert conn.wait(5)


# -- the connection contract (wsbridge.protocol.connection) -------------------------


def test_a_transport_given_outputs_gets_the_contracts_typed_outputs(layer):
    from wsbridge.protocol.connection import CloseFrame, Message, Opened, Refused

    class Echo(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            if text_data == "bye":
                self.close(4001, "done")
            self.send(text_data=text_data)

    outputs: list[object] = []
    conn = Connection(build_websocket_scope("/"), Echo, layer, outputs=outputs.append)
    conn.push({"type": "websocket.connect"})
    conn.push({"type": "websocket.receive", "text": "hi"})
    conn.push({"type": "websocket.receive", "text": "bye"})
    _wait_for(lambda: len(outputs) == 3)
    assert outputs == [Opened(None), Message(text="hi"), CloseFrame(4001, "done")]
    assert conn.accepted and conn.closed
    conn.disconnected(4001)
    assert conn.wait(5)

    class Refuser(WebsocketConsumer):
        def connect(self):
            pass  # neither accepts nor refuses

    refused: list[object] = []
    conn = Connection(build_websocket_scope("/r/"), Refuser, layer, outputs=refused.append)
    conn.push({"type": "websocket.connect"})
    assert conn.wait(5)
    (answer,) = refused
    assert isinstance(answer, Refused) and (answer.status, answer.close_code) == (403, 1008)
    assert not conn.accepted


def test_connection_takes_exactly_one_of_send_and_outputs(layer):
    with pytest.raises(TypeError, match="exactly one of send or outputs"):
        Connection(build_websocket_scope("/"), Recorder, layer)
    with pytest.raises(TypeError, match="exactly one of send or outputs"):
        Connection(build_websocket_scope("/"), Recorder, layer, print, outputs=print)


def test_a_message_sent_in_connect_accepts_implicitly_and_the_connection_stays_open(layer):
    class Greeter(WebsocketConsumer):
        def connect(self):
            self.send(text_data="hello")  # no accept(): the first message accepts

    comm = Communicator(Greeter, "/")
    comm.connection.push({"type": "websocket.connect"})
    assert comm.receive_output() == {"type": "websocket.send", "text": "hello"}
    assert comm.receive_nothing()  # no refusal follows the implicit accept
    assert comm.connection.accepted and not comm.connection.closed
    comm.disconnect()
