"""One mailbox per connection: transport events and layer messages, in order.

A transport (WebSocket, long-poll, HTTP) creates a :class:`Connection` for
each client, pushes its events into it (``websocket.connect``,
``websocket.receive``) and receives the consumer's answers through the
``send`` callable it passed in (``websocket.accept``, ``websocket.send``,
``websocket.close``, or the ``http.response.*`` events). Layer messages for
the connection's channel are pushed into the same mailbox by the layer
(``attach``), so socket events and layer messages are handled in the order
they arrived.

Handlers run one at a time per connection, in arrival order; a handler that
blocks delays only its own connection. An idle connection costs no greenlet.

How mailboxes are run: the pump
-------------------------------
A fan-out wakes thousands of mailboxes at once, and spawning a greenlet for
each (a ``Greenlet`` object, gevent's spawn-tree bookkeeping, a switch) was
most of the cost of a delivery. Instead, a woken connection is appended to
one ready list (per process: wsbridge runs monkey-patched, in one hub) and a
single raw greenlet, *the pump* (``gevent.spawn_raw``), drains the woken
connections one after another. A connection is in the list at most once
(``_runner`` says where it is), so its events still run one at a time, in
order.

Handlers are synchronous code that may block (a database query, a socket).
Before draining, the pump registers a hub callback (``loop.run_callback``).
Callbacks run only when the hub gets control, and while the pump is busy
the hub only gets control if the pump yields to it, that is, if a handler
*blocked*. The callback then hands the rest of the ready list to a fresh
pump at once; the old greenlet stays with the one connection whose handler
blocked, finishes its mailbox and ends. When the pump ends without
blocking, it stops the callback unused. So the common case (handlers that
only ``send``) costs no greenlet, and a slow consumer still delays only its
own connection.

A pump that has worked for the interpreter's switch interval (5 ms by
default) ends and lets a successor continue after the hub has polled for
I/O: consumers that keep waking each other cannot starve the sockets.

What the transport must do:

* call :meth:`Connection.disconnected` once the socket is gone, whoever
  closed it (calling it twice, or after a refused handshake, is harmless);
* answer a ``websocket.close`` that comes before ``websocket.accept`` with
  HTTP 403 (500 when the event has ``"error": True``: the consumer crashed);
* never raise from ``send`` for a gone client, and never block in it for long.

A consumer that raises is logged once (with its traceback) and its
connection alone is closed with 1011; the others go on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from greenlet import getcurrent

from ..exceptions import ChannelFull, LayerError, StopConsumer, UnknownMessageType
from ..layers import DEFAULT_ALIAS, get_channel_layer
from ..layers.base import BaseChannelLayer
from ..process import mark_serving
from .consumer import log_unanswered_connect

__all__ = ["Connection", "DEFAULT_MAILBOX_SIZE"]

logger = logging.getLogger("wsbridge.consumers")

#: Transport events waiting before the transport's reader pauses (backpressure).
TRANSPORT_HIGH_WATER = 64
DEFAULT_MAILBOX_SIZE = 1000

Send = Callable[[dict[str, Any]], None]

#: ``Connection._runner`` while the connection waits in the ready list.
_QUEUED: Any = object()

# Woken connections, in wake order, and the pump greenlet draining them (None
# when no pump is running). Module state: every Connection shares one hub.
_ready: deque[Connection] = deque()
_pump: Any = None


def _start_pump() -> None:
    global _pump
    _pump = gevent.spawn_raw(_run_pump)


def _run_pump() -> None:
    """Drain woken connections one after another, in the calling (pump) greenlet."""
    global _pump
    # No local holds this greenlet: a consumer's exception keeps its traceback's
    # frames (Connection.error, log records), and those must not pin the pump.
    loop = gevent.get_hub().loop
    # Runs only if this greenlet yields to the hub mid-list: a handler blocked.
    watchdog = loop.run_callback(_hand_off, getcurrent())
    deadline = time.perf_counter() + sys.getswitchinterval()
    try:
        while _ready and _pump is getcurrent():
            _ready.popleft()._drain()
            if time.perf_counter() >= deadline and _pump is getcurrent() and _ready:
                # Budget spent: a successor runs after the hub has polled for I/O
                # (a 0 s timer fires after the poll; a callback would not).
                _pump = None
                loop.timer(0).start(_resume_pump)
                break
    finally:
        watchdog.stop()
        if _pump is getcurrent():
            # Ended (the list is empty) or was killed while still the pump.
            _pump = None
            if _ready:
                _start_pump()


def _hand_off(blocked: Any) -> None:
    # Hub callback: the pump yielded in the middle of a handler. The rest of the
    # list goes to a new pump now; the blocked greenlet keeps its one connection.
    global _pump
    if _pump is blocked:
        _pump = None
        if _ready:
            _start_pump()


def _resume_pump() -> None:
    # Timer callback after a pump spent its budget (a wake may have started one since).
    if _pump is None and _ready:
        _start_pump()


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
            consumer emits; must not raise for a gone client.
        mailbox_size: layer messages that may wait; one more raises
            ``ChannelFull`` to the sender (a group send skips this member).
    """

    def __init__(
        self,
        scope: dict[str, Any],
        consumer_class: Any,
        layer: BaseChannelLayer | None,
        send: Send,
        *,
        mailbox_size: int | None = None,
    ) -> None:
        alias = getattr(consumer_class, "channel_layer_alias", DEFAULT_ALIAS)
        if alias != DEFAULT_ALIAS:
            layer = get_channel_layer(alias)
        mark_serving()
        self.scope = scope
        self.layer = layer
        self._transport_send = send
        self.channel_name = layer.new_channel() if layer is not None else None
        # (from the transport?, event): the flag keeps backpressure counts exact.
        self._mailbox: deque[tuple[bool, dict[str, Any]]] = deque()
        self._pending_transport = 0
        self._drained = Event()
        self._drained.set()
        # None (idle), _QUEUED (in the ready list) or the greenlet draining it.
        self._runner: Any = None
        self.finished = Event()
        self.accepted = False
        self.closed = False
        self.failed = False
        #: The exception that ended the consumer, if one did (for tests and logs).
        self.error: BaseException | None = None
        self._disconnect_queued = False
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
        if layer is not None and self.channel_name is not None:
            layer.attach(self.channel_name, self._from_layer)

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
        self._enqueue_transport(event)

    def _enqueue_transport(self, event: dict[str, Any]) -> None:
        self._pending_transport += 1
        self._mailbox.append((True, event))
        self._wake()

    def _from_layer(self, message: dict[str, Any]) -> None:
        if self.finished.is_set():
            return
        if len(self._mailbox) - self._pending_transport >= self.mailbox_size:
            raise ChannelFull(
                f"connection {self.channel_name} has {self.mailbox_size} messages waiting"
            )
        self._mailbox.append((False, message))
        self._wake()

    def _wake(self) -> None:
        if self._runner is None:
            self._runner = _QUEUED
            _ready.append(self)
            if _pump is None:
                _start_pump()

    # -- the mailbox, run by the pump (see the module docstring) ------------------

    def _drain(self) -> None:
        mailbox = self._mailbox
        self._runner = getcurrent()
        try:
            while mailbox and not self.finished.is_set():
                from_transport, event = mailbox.popleft()
                if from_transport:
                    self._pending_transport -= 1
                    if self._pending_transport < TRANSPORT_HIGH_WATER // 2:
                        self._drained.set()
                self._handle(event)
        finally:
            self._runner = None
            if mailbox and not self.finished.is_set():
                self._wake()

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        try:
            self.consumer.dispatch(event)
        except StopConsumer:
            self._finish(close_code=1000)
            return
        except UnknownMessageType as exc:
            # The message says it all; a traceback would only show dispatch().
            self._fail(exc, f"{self._ending()}: {exc}", with_traceback=False)
            return
        except Exception as exc:
            self._fail(exc, f"consumer {type(self.consumer).__name__} raised handling {kind!r} "
                            f"on {self.scope.get('path')!r}; {self._ending()}")
            return
        if kind == "websocket.connect" and not self.accepted and not self.closed:
            # connect() returned without accepting: refuse the handshake, and say why.
            log_unanswered_connect(self.consumer, self.scope)
            self._emit({"type": "websocket.close", "code": 1000, "denied": True})
        elif kind in ("websocket.disconnect", "http.disconnect"):
            self._finish(close_code=None)

    def _ending(self) -> str:
        if self.scope.get("type") == "http":
            return "ending this request (500 unless already answered)"
        return "closing this connection with 1011"

    def _fail(self, exc: BaseException, message: str, *, with_traceback: bool = True) -> None:
        self.failed = True
        self.error = exc
        logger.error(message, exc_info=exc if with_traceback else None)
        self._finish(close_code=1011)

    # -- output -----------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.closed and kind != "http.response.body":
            logger.debug("dropping %s for closed connection %s", kind, self.channel_name)
            return
        if kind == "websocket.accept":
            if self.accepted:
                return
            self.accepted = True
        elif kind == "websocket.close":
            self.closed = True
            if not self.accepted:
                # A refused handshake never opens a socket, so no transport
                # reports its end: deliver the disconnect (groups, cleanup) here.
                self._transport_send(event)
                self._queue_disconnect(1006)
                return
        self._transport_send(event)

    # -- the end ---------------------------------------------------------------

    def _finish(self, close_code: int | None) -> None:
        if self.finished.is_set():
            return
        if close_code is not None and not self.closed and self.scope.get("type") == "websocket":
            # 1011 after a crash; a crash before accept refuses with 500.
            self._emit({"type": "websocket.close", "code": close_code, "error": self.failed})
        self.finished.set()
        self._drained.set()
        self._mailbox.clear()
        self._pending_transport = 0
        if self.failed:
            self._leave_groups()
        if self.layer is not None and self.channel_name is not None:
            try:
                self.layer.detach(self.channel_name)
            except Exception:  # the layer logs its own outages
                logger.debug("detach of %s failed", self.channel_name, exc_info=True)

    def _leave_groups(self) -> None:
        # A crashed consumer never ran its disconnect handler; do not leave
        # its channel in the groups it declared, or group sends keep aiming at it.
        groups = getattr(self.consumer, "groups", None) or ()
        if self.layer is None or self.channel_name is None:
            return
        for group in groups:
            try:
                self.layer.group_discard(group, self.channel_name)
            except (LayerError, ValueError):
                logger.debug("could not discard %s from %r", self.channel_name, group)

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
        if runner is not None and runner is not _QUEUED and runner is not getcurrent():
            gevent.get_hub().loop.run_callback(self._kill_runner, runner)

    def _kill_runner(self, runner: Any) -> None:
        # Hub callback. Runners are raw greenlets that go on to other connections
        # once this one is done: throw only if it is still inside this mailbox.
        if self._runner is runner and not runner.dead:
            runner.throw(gevent.GreenletExit)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the consumer has finished; True if it did."""
        return self.finished.wait(timeout)
