"""The pump: one greenlet drains every woken connection mailbox, in wake order.

A fan-out wakes thousands of mailboxes at once, and spawning a greenlet for
each (a ``Greenlet`` object, gevent's spawn-tree bookkeeping, a switch) was
most of the cost of a delivery. Instead, a woken connection is appended to
one ready list (per process: wsbridge runs monkey-patched, in one hub) and a
single raw greenlet, *the pump* (``gevent.spawn_raw``), drains the woken
connections one after another. A connection is in the list at most once
(its ``_runner`` says where it is), so its events still run one at a time,
in order.

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
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, Protocol

import gevent
from greenlet import getcurrent

__all__ = ["QUEUED", "Drainable", "wake"]

#: A mailbox's ``_runner`` while it waits in the ready list.
QUEUED: Any = object()


class Drainable(Protocol):
    """What the pump needs of a mailbox (``runner.Connection``)."""

    _runner: Any

    def _drain(self) -> None: ...


# Woken mailboxes, in wake order, and the pump greenlet draining them (None
# when no pump is running). Module state: every mailbox shares one hub.
_ready: deque[Drainable] = deque()
_pump: Any = None


def wake(mailbox: Drainable) -> None:
    """Queue ``mailbox`` for the pump unless it is queued or being drained already."""
    if mailbox._runner is None:
        mailbox._runner = QUEUED
        _ready.append(mailbox)
        if _pump is None:
            _start_pump()


def _start_pump() -> None:
    global _pump
    _pump = gevent.spawn_raw(_run_pump)


def _run_pump() -> None:
    """Drain woken mailboxes one after another, in the calling (pump) greenlet."""
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
