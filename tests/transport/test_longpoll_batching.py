"""A held poll answers a burst in one response (``batch_wait``), and never waits past it.

A server process (``lp_server.py``) with the memory layer; the burst comes
from a greenlet in it that yields after every group send, as a view or a
task doing I/O between its sends would.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from lp_support import Client, Server, request, wait_for


@pytest.fixture(scope="module")
def batching():
    srv = Server("--poll-timeout", "10")  # the default batch_wait (0.5 s)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def at_once():
    srv = Server("--poll-timeout", "10", "--batch-wait", "0")
    yield srv
    srv.stop()


def _held_poll(server: Server, room: str) -> tuple[threading.Thread, dict[str, Any]]:
    """A session in ``room`` with a poll held on the server (returns what it answered)."""
    client = Client(server.port, f"/ws/chat/{room}/")
    got: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        got["frames"] = client.poll(wait=10)
        got["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    wait_for(lambda: request(server.port, "/lpstats", method="GET")[1]["polls_held"] >= 1)
    return thread, got


def test_a_burst_from_a_yielding_loop_reaches_a_held_poll_in_one_answer(batching):
    thread, got = _held_poll(batching, "b1")
    request(batching.port, "/burst?group=chat.b1&n=20", method="GET")
    thread.join(15)
    assert [f["text"] for f in got["frames"]] == [f"burst {i}" for i in range(20)]


def test_without_batch_wait_the_first_message_is_answered_alone(at_once):
    # What batch_wait changes: the poll answers as soon as the first send woke it.
    thread, got = _held_poll(at_once, "b2")
    request(at_once.port, "/burst?group=chat.b2&n=20", method="GET")
    thread.join(15)
    assert 1 <= len(got["frames"]) < 20
    assert got["frames"][0]["text"] == "burst 0"


def test_a_server_that_is_never_idle_answers_within_batch_wait(batching):
    thread, got = _held_poll(batching, "b3")
    request(batching.port, "/busy?seconds=3", method="GET")  # the hub never idle for 3 s
    started = time.monotonic()
    request(batching.port, "/broadcast?group=chat.b3&text=now", method="GET")
    thread.join(15)
    answered_after = time.monotonic() - started
    assert [f["text"] for f in got["frames"]] == ["now"]
    assert answered_after < 2.0, f"held {answered_after:.2f}s on a busy server (batch_wait 0.5)"
    assert answered_after >= 0.4, "answered before batch_wait: the busy loop did not keep it"
