"""One mailbox per connection: transport events and layer messages, in order.

A transport (WebSocket, long-poll, HTTP) creates a :class:`Connection` for
each client, pushes its events into it (``websocket.connect``, ``.receive``)
and gets the consumer's answers back. Layer messages for the connection's
channel are pushed into the same mailbox by the layer (``attach``), so socket
events and layer messages are handled in the order they arrived.

Handlers run one at a time per connection, in arrival order; a handler that
blocks delays only its own connection. An idle connection costs no greenlet.

Woken mailboxes are drained by *the pump* (``wsbridge.consumers.pump``):
one raw greenlet for all of them, handed over to a fresh one when a handler
blocks, so handlers that only ``send`` cost no greenlet.

What a connection sends its transport follows the connection contract
(:mod:`wsbridge.protocol.connection`, which says how a transport uses it):
a transport given as ``outputs=`` gets its typed outputs, a plain ``send``
callable (the testing ``Communicator``, the HTTP transport) ASGI-style dicts.

What the transport must do:

* call :meth:`Connection.disconnected` once the socket is gone, whoever
  closed it (calling it twice, or after a refused handshake, is harmless);
* answer a ``Refused`` output with its HTTP status (a close frame with its
  ``close_code`` when the handshake was already answered);
* never raise from ``send`` for a gone client, and never block in it for long.

A consumer that raises is logged once (with its traceback) and its
connection alone is closed with 1011; the others go on.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from functools import partial
from time import perf_counter
from typing import Any

import gevent
from gevent.event import Event
from greenlet import getcurrent

from .. import admission, drops
from .. import metrics as _metrics
from ..exceptions import ChannelFull, StopConsumer, UnknownMessageType
from ..layers import DEFAULT_ALIAS, get_channel_layer
from ..layers.base import BaseChannelLayer
from ..logs import CONNECTION_ID, new_connection_id
from ..policies import GROUP_KEY
from ..process import mark_serving
from ..protocol.closecodes import CloseCode
from ..protocol.connection import (
    Accept,
    Close,
    ConnectionContract,
    Crash,
    Disconnected,
    Output,
    Refuse,
    Refused,
    Send,
    State,
    from_asgi,
    refusal_for,
    to_asgi,
)
from ..protocol.connection import Event as ContractEvent
from . import ending, identity_hooks
from .consumer import log_unanswered_connect
from .fastlane import frame_of, send_event
from .pump import QUEUED, wake
from .stamps import Stamps, refusals

# wsbridge.* control messages (identity: close, deliver, re-check, refresh) are run by
# the runner itself, before (and instead of) the consumer.
_CONTROL_TYPES = frozenset(
    ("wsbridge.close", "wsbridge.deliver", "wsbridge.recheck", "wsbridge.refresh")
)

__all__ = ["Connection", "DEFAULT_MAILBOX_SIZE"]

logger = logging.getLogger("wsbridge.consumers")

#: Transport events waiting before the transport's reader pauses (backpressure).
TRANSPORT_HIGH_WATER = 64
#: Events one connection handles before the pump moves on to the next woken one:
#: a client flooding messages waits its turn instead of delaying everyone's.
DRAIN_TURN = 16
DEFAULT_MAILBOX_SIZE = 1000

SendDict = Callable[[dict[str, Any]], None]
#: What a transport that follows the connection contract receives (``outputs=``).
Outputs = Callable[[Output], None]


class Connection:
    """The consumer side of one client connection.

    Args:
        scope: the connection's scope (built by the transport).
        consumer_class: what the router resolved; ``build(scope, ...)`` makes
            the instance.
        layer: the channel layer, or None to run without one. A consumer class
            with a ``channel_layer_alias`` other than "default" gets that
            alias's layer instead.
        send: called (in the mailbox greenlet) with every event the
            consumer emits, as dicts; must not raise for a gone client.
        mailbox_size: layer messages that may wait; one more raises
            ``ChannelFull`` to the sender (a group send skips this member).
        outputs: instead of ``send``, for a transport that follows the
            connection contract: called with its typed outputs
            (:mod:`wsbridge.protocol.connection`); same rules as ``send``.
        messages: with ``outputs``, a sink for one message (text, data) while open:
            the contract's ``(OPEN, Send)`` row without its objects (the hot path).

    Raises:
        TypeError: neither or both of ``send`` and ``outputs`` were given.
    """

    def __init__(
        self,
        scope: dict[str, Any],
        consumer_class: Any,
        layer: BaseChannelLayer | None,
        send: SendDict | None = None,
        *,
        mailbox_size: int | None = None,
        outputs: Outputs | None = None,
        messages: Callable[[str | None, bytes | None], None] | None = None,
    ) -> None:
        if (send is None) == (outputs is None):
            raise TypeError("Connection() takes exactly one of send or outputs")
        alias = getattr(consumer_class, "channel_layer_alias", DEFAULT_ALIAS)
        if alias != DEFAULT_ALIAS:
            layer = get_channel_layer(alias)
        mark_serving()
        #: Put on log records about this connection (wsbridge.logs).
        self.connection_id: str = CONNECTION_ID.get() or new_connection_id()
        self.scope = scope
        self.layer = layer
        self._transport_send = send  # the plain (dict) sink, when given
        self._outputs: Outputs = outputs if outputs is not None else self._as_dicts
        self._messages = messages if outputs is not None else None
        #: The accept / refuse / send / close rules (wsbridge.protocol.connection).
        self.contract = ConnectionContract()
        self.channel_name = layer.new_channel() if layer is not None else None
        # (from the transport?, event): the flag keeps backpressure counts exact.
        self._mailbox: deque[tuple[bool, dict[str, Any]]] = deque()
        self._pending_transport = 0
        self._drained = Event()
        self._drained.set()
        # None (idle), pump.QUEUED (in the ready list) or the greenlet draining it.
        self._runner: Any = None
        self.finished = Event()
        self.failed = False
        #: The exception that ended the consumer, if one did (for tests and logs).
        self.error: BaseException | None = None
        self._disconnect_queued = False
        self._timings: Any = None  # this consumer's handler timings (wsbridge.metrics), once on
        #: Groups joined by wsbridge.identity (the user's, the session's), left at the end.
        self.identity_groups: list[str] | None = None
        self.identity_counted: str | None = None  # the user counted by wsbridge.admission
        self.identity_next_check = 0.0
        # Slow-client policies (wsbridge.policies): the gate, once the transport
        # told us its backlog.
        self._gate: Any = None
        self._inbound = admission.InboundGuard(scope)  # message and byte rates
        if mailbox_size is None:
            mailbox_size = (
                layer.get_capacity(self.channel_name)
                if layer is not None and self.channel_name
                else DEFAULT_MAILBOX_SIZE
            )
        self.mailbox_size = mailbox_size
        self.consumer = consumer_class.build(
            scope, send=self._emit, channel_layer=layer, channel_name=self.channel_name
        )
        lane = getattr(self.consumer, "fastlane", None)  # types sent without a handler
        self._fastlane: dict[str, str] | None = lane if scope.get("type") == "websocket" else None
        if layer is not None and self.channel_name is not None:
            layer.attach(self.channel_name, self._from_layer)
        # What the client last saw, per history group, and the positions on its frames.
        self._stamps = Stamps(scope)
        self._stamps.ask(self.consumer, layer, self.channel_name)

    # -- input --------------------------------------------------------------

    def push(self, event: dict[str, Any]) -> None:
        """Queue a transport event; waits while too many are already queued.

        The wait is backpressure: the transport stops reading its socket
        until the consumer catches up.
        """
        if self.finished.is_set():
            return
        while self._pending_transport >= TRANSPORT_HIGH_WATER and not self.finished.is_set():
            self._drained.clear()
            self._drained.wait(1.0)
        if self.finished.is_set():
            return
        if event.get("type") == "websocket.receive" and not self._within_rates(event):
            return
        self._enqueue_transport(event)

    def _within_rates(self, event: dict[str, Any]) -> bool:
        # This connection's, its user's and its IP's inbound rates (wsbridge.admission).
        reason = self._inbound.check(event, self.scope.get("wsbridge.user_id"))
        if reason is None:
            return True
        if reason:  # the first trip: close (later messages are only dropped)
            self.post(
                {
                    "type": "wsbridge.close",
                    "code": CloseCode.RATE_LIMITED,
                    "reason": reason,
                    "revoked": False,
                }
            )
        return False

    def _enqueue_transport(self, event: dict[str, Any]) -> None:
        self._pending_transport += 1
        self._mailbox.append((True, event))
        self._wake()

    def _from_layer(self, message: dict[str, Any]) -> None:
        if self.finished.is_set():
            return
        lane = self._fastlane
        if lane is not None and self._runner is None and not self._mailbox:
            key = lane.get(message.get("type"))  # type: ignore[arg-type]
            if key is not None and self._fastlane_now(message, key):
                return  # written: nothing of this connection was waiting before it
        if len(self._mailbox) - self._pending_transport >= self.mailbox_size:
            raise ChannelFull(
                f"connection {self.channel_name} has {self.mailbox_size} messages waiting"
            )
        self._mailbox.append((False, message))
        self._wake()

    def _wake(self) -> None:
        wake(self)

    def _fastlane_now(self, message: dict[str, Any], key: str) -> bool:
        # Only a plain write: frames to stamp, to hold, or before the accept go in order.
        messages = self._messages
        if messages is None or self._gate is not None or self._stamps.on:
            return False
        frame = frame_of(message, key)
        if frame is None or self.contract.state is not State.OPEN:
            return False
        messages(*frame)
        return True

    @property
    def accepted(self) -> bool:
        """The connection was opened (explicitly, or by a first message)."""
        return self.contract.accepted

    @property
    def closed(self) -> bool:
        """True once the server side refused or closed it; nothing more goes out."""
        contract = self.contract
        return contract.refusal is not None or contract.close_code is not None

    # -- the mailbox, run by the pump (see the module docstring) ------------------

    def _drain(self) -> None:
        mailbox = self._mailbox
        self._runner = getcurrent()
        context = CONNECTION_ID.set(self.connection_id)  # log records name this connection
        turn = DRAIN_TURN
        try:
            while mailbox and not self.finished.is_set() and turn:
                turn -= 1
                from_transport, event = mailbox.popleft()
                if from_transport:
                    self._pending_transport -= 1
                    if self._pending_transport < TRANSPORT_HIGH_WATER // 2:
                        self._drained.set()
                elif self._gate is not None and GROUP_KEY in event:
                    self._handle_policy_message(event)
                    continue
                self._handle(event)
        finally:
            CONNECTION_ID.reset(context)
            self._runner = None
            if mailbox and not self.finished.is_set():
                self._wake()

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in _CONTROL_TYPES or (
            kind == "websocket.receive"
            and "wsbridge.token_claims" in self.scope
            and str(event.get("text"))[:20] == identity_hooks.REFRESH_PREFIX
            and identity_hooks.as_refresh(event)
        ):
            self._control(event)
            return
        stamps = self._stamps
        if stamps.refusal is not None and kind in ("websocket.connect", "http.request"):
            self._refuse(kind)
            return
        if stamps.on:
            notice = stamps.begin(event, kind)
            if notice is not None and self.accepted and not self.closed:
                self._step(notice)
        started = perf_counter() if _metrics._enabled else 0.0
        try:
            lane = self._fastlane
            if lane is not None and kind in lane:
                self._emit(send_event(event, lane[kind]))
            else:
                self.consumer.dispatch(event)
        except StopConsumer:
            self._finish(close_code=CloseCode.NORMAL)
            return
        except UnknownMessageType as exc:
            # The message says it all; a traceback would only show dispatch().
            self._fail(exc, f"{self._ending()}: {exc}", with_traceback=False)
            return
        except Exception as exc:
            _metrics.STATS.consumer_exceptions[type(self.consumer).__qualname__] += 1
            self._fail(
                exc,
                f"consumer {type(self.consumer).__name__} raised handling {kind!r} "
                f"on {self.scope.get('path')!r}; {self._ending()}",
            )
            return
        finally:
            if started:  # metrics on: Timings.observe inlined (this runs once per delivery)
                elapsed = perf_counter() - started
                timings = self._timings
                if timings is None:
                    timings = self._timings = _metrics.handler_timings(
                        type(self.consumer).__qualname__
                    )
                timings.counts[bisect_left(timings.bounds, elapsed)] += 1
                timings.total += elapsed
            if stamps.handling:
                frame = stamps.end(self.accepted and not self.closed)
                if frame is not None:
                    self._step(frame)
        if kind == "websocket.connect" and self.contract.state is State.CONNECTING:
            # connect() returned without accepting: refuse the handshake, and say why.
            log_unanswered_connect(self.consumer, self.scope)
            self._step(Refuse(CloseCode.NORMAL))
        elif kind in ("websocket.disconnect", "http.disconnect"):
            self._finish(close_code=None)

    # -- slow-client policies (wsbridge.policies) ---------------------------------------

    def set_backlog(self, backlog: Callable[[], int], soft_limit: int) -> None:
        """Let policy groups' messages wait while ``backlog() > soft_limit`` (transports: once)."""
        from .slowgate import Gate

        self._gate = Gate(
            self._send_held, backlog, soft_limit, self.finished.is_set, self.layer, self.post
        )

    def _handle_policy_message(self, event: dict[str, Any]) -> None:
        for message in self._gate.messages_for(event):  # one, none, or a group's replay
            if self._gate.begin(message):
                try:
                    self._handle(message)
                finally:
                    self._gate.end()

    # -- identity: the user's groups and control messages (wsbridge.identity) -------

    def _streaming(self) -> bool:
        consumer = self.consumer
        return (
            bool(getattr(consumer, "response_started", False))
            and not getattr(consumer, "response_complete", True)
            and not self.finished.is_set()
        )

    def _identity_open(self) -> bool:
        """Join the user's groups; False when the user is at its connection limit."""
        return identity_hooks.on_open(self)

    def _control(self, event: dict[str, Any]) -> None:
        try:
            identity_hooks.handle_control(self, event)
        except Exception as exc:
            self._fail(exc, f"identity control {event.get('type')!r} failed; {self._ending()}")

    def post(self, event: dict[str, Any]) -> None:
        """Queue a control event (no capacity check: wsbridge's own, never refused)."""
        if self.finished.is_set():
            return
        self._mailbox.append((False, event))
        self._wake()

    def close_now(self, code: int, reason: str) -> None:
        """Close the client's connection with ``code``/``reason`` whatever the consumer does.

        WebSocket and long-poll get a close frame; an HTTP stream (SSE) gets a
        last ``wsbridge.close`` event and ends; an unanswered HTTP request 403.
        """
        if self.scope.get("type") == "websocket":
            self._step(Close(code, reason, revoked=True))
            return
        from . import http

        if getattr(self.consumer, "response_started", False):
            events = [http.sse_close(code, reason)]
        else:  # unanswered: refused, as a handshake would be (403)
            status = refusal_for(Close(code, reason, revoked=True)).status
            events = http.plain_response(status, (reason + "\n").encode("utf-8"))
        for event in events:
            self._emit(event)

    def deliver(self, text: str | None, data: bytes | None) -> None:
        """Send a frame straight to the client (``send_to_user`` with a str/bytes)."""
        if self.scope.get("type") == "websocket":
            if text is not None or data is not None:
                self._send_frame(Send(text, data if text is None else None))
            return
        if self._streaming():
            from .http import sse_data

            self._emit(sse_data(text, data))

    def _refuse(self, kind: Any) -> None:
        # Bad recovery input (too many positions, malformed): 403 for a
        # handshake, 400 for an HTTP request (SSE's Last-Event-ID).
        reason = self._stamps.refusal or "bad recovery positions"
        refusals.note(reason)
        if kind == "websocket.connect":
            self._step(Refuse(CloseCode.POLICY_VIOLATION))
            return
        from .http import plain_response

        for event in plain_response(400, reason.encode()):
            self._emit(event)
        self._finish(close_code=None)

    def _ending(self) -> str:
        if self.scope.get("type") == "http":
            return "ending this request (500 unless already answered)"
        return "closing this connection with 1011"

    def _fail(self, exc: BaseException, message: str, *, with_traceback: bool = True) -> None:
        self.failed = True
        self.error = exc
        logger.error(message, exc_info=exc if with_traceback else None)
        self._finish(close_code=CloseCode.INTERNAL_ERROR)

    # -- output -----------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        """The consumer's ``base_send``: its events, through the connection contract."""
        gate, messages = self._gate, self._messages
        if messages and self.contract.state is State.OPEN and event.get("type") == "websocket.send":
            if not self._stamps.handling and (gate is None or not gate.holding):
                return messages(event.get("text"), event.get("bytes"))  # (OPEN, Send)
        step = from_asgi(event)
        if isinstance(step, Send):
            self._send_frame(step)
        elif step is not None:
            self._step(step)
        elif self._transport_send is not None:
            # http.response.* (the HTTP transport's own vocabulary) and the rest, as given.
            if event.get("type") == "http.response.start":
                from .http import is_event_stream

                if is_event_stream(event):
                    self._identity_open()
            self._transport_send(event)
        else:
            logger.warning(
                "WebSocket transport ignores event %r from the consumer", event.get("type")
            )

    def _send_frame(self, step: Send) -> None:
        # A frame, stamped with its history position, or held by a slow-client policy.
        if self.contract.state not in (State.CONNECTING, State.OPEN):
            self._step(step)  # dropped, and logged so
            return
        if self._stamps.handling:
            step = self._stamps.stamp(step)
        gate = self._gate
        if gate is not None and gate.holding:
            if gate.hold({"type": "websocket.send", "text": step.text, "bytes": step.data}):
                return
        self._step(step)

    def _send_held(self, event: dict[str, Any]) -> None:
        # The slow-client gate hands over a message it held (or a gap notice).
        self._step(Send(event.get("text"), event.get("bytes")))

    def _step(self, step: ContractEvent) -> None:
        """Apply one contract event; hand its outputs to the transport, in order."""
        contract = self.contract
        if contract.state is State.CONNECTING and isinstance(step, (Accept, Send)):
            # Joined before the client learns it is open: a send_to_user() made as
            # soon as the handshake completes must reach it.
            if not self._identity_open():
                step = Refuse(CloseCode.POLICY_VIOLATION)
        outputs = contract.send(step)
        if not outputs:
            if isinstance(step, Send):
                drops.record_drop("connection_closed", detail=f"{self.channel_name}")
            return
        for output in outputs:
            self._outputs(output)
        if isinstance(outputs[-1], Refused):
            # A refused handshake never opens a socket, so no transport
            # reports its end: deliver the disconnect (groups, cleanup) here.
            self._queue_disconnect(CloseCode.ABNORMAL)

    def _as_dicts(self, output: Output) -> None:
        event = to_asgi(output)
        if event is not None and self._transport_send is not None:
            self._transport_send(event)

    # -- the end ---------------------------------------------------------------

    def _finish(self, close_code: int | None) -> None:
        if self.finished.is_set():
            return
        if close_code is not None and self.scope.get("type") == "websocket":
            # 1011 after a crash; a crash before accept refuses with 500.
            self._step(Crash() if self.failed else Close(close_code))
        self.contract.send(Disconnected())
        self._release()
        self.finished.set()
        self._drained.set()
        self._mailbox.clear()
        self._pending_transport = 0
        if self.identity_groups or self.identity_counted:
            identity_hooks.on_finish(self)
        if self.failed:  # its disconnect() never ran
            ending.leave_groups(self.consumer, self.layer, self.channel_name)
        if self.layer is not None and self.channel_name is not None:
            try:
                self.layer.detach(self.channel_name)
            except Exception:  # the layer logs its own outages
                logger.debug("detach of %s failed", self.channel_name, exc_info=True)

    def _release(self) -> None:
        # CLOSED is final: no cycle is left for the collector (see .ending).
        late = partial(ending.send_after_close, self.channel_name)
        self._outputs = ending.no_output
        self._messages = None
        if self._transport_send is not None:
            self._transport_send = late
        if getattr(self.consumer, "base_send", None) == self._emit:
            self.consumer.base_send = late

    def _queue_disconnect(self, code: int) -> None:
        if self._disconnect_queued or self.finished.is_set():
            return
        self._disconnect_queued = True
        # No backpressure wait: the client is gone, this must not block the transport.
        if self.scope.get("type") == "http":
            self._enqueue_transport({"type": "http.disconnect"})
        else:
            self._enqueue_transport({"type": "websocket.disconnect", "code": code})

    def disconnected(self, code: int) -> None:
        """The transport lost the client: deliver ``websocket.disconnect`` (once).

        Call it whenever the socket ends, after a close by either side; it
        never blocks and extra calls are ignored. An HTTP connection gets
        ``http.disconnect`` (``code`` unused).
        """
        self._queue_disconnect(code)

    def abort(self) -> None:
        """End the consumer now, even in the middle of a handler.

        For a transport that gave up waiting for a stuck consumer: nothing
        more is delivered, the handler's greenlet gets ``GreenletExit`` (soon
        after this returns; it never blocks).
        """
        runner = self._runner
        self._finish(close_code=None)
        if runner is not None and runner is not QUEUED and runner is not getcurrent():
            gevent.get_hub().loop.run_callback(self._kill_runner, runner)

    def _kill_runner(self, runner: Any) -> None:
        # Hub callback. Runners are raw greenlets that go on to other connections
        # once this one is done: throw only if it is still inside this mailbox.
        if self._runner is runner and not runner.dead:
            runner.throw(gevent.GreenletExit)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the consumer has finished; True if it did."""
        return bool(self.finished.wait(timeout))
