"""The budgets and the refusal log of wsbridge.transport.limits (no server needed)."""

from __future__ import annotations

import logging
import time

import pytest

from wsbridge.transport import limits
from wsbridge.transport.limits import InboundBudget, ServerTimeouts, refusal_counts, refused
from wsbridge.transport.wsoptions import WebSocketOptions


@pytest.fixture(autouse=True)
def fresh_counts():
    limits.reset_refusal_counts()
    yield
    limits.reset_refusal_counts()


def test_refusals_are_counted_and_warned_once_per_interval(caplog):
    with caplog.at_level(logging.DEBUG, logger="wsbridge.limits"):
        for _ in range(50):
            refused("bad_request", "from 127.0.0.1")
        refused("header_timeout", "slow peer")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == ["bad_request", "header_timeout"]
    assert "(1 so far" in warnings[0].getMessage()
    assert refusal_counts() == {"bad_request": 50, "header_timeout": 1}
    assert not any(r.exc_info for r in caplog.records)


def test_the_next_warning_carries_the_running_count(caplog, monkeypatch):
    monkeypatch.setattr(limits, "WARN_INTERVAL", 0.05)
    with caplog.at_level(logging.WARNING, logger="wsbridge.limits"):
        for _ in range(10):
            refused("client_gone")
        time.sleep(0.06)
        refused("client_gone")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "(11 so far" in messages[1]


def test_control_frames_past_the_burst_and_rate_are_refused():
    budget = InboundBudget(rate=10.0, burst=5)
    assert all(budget.control() for _ in range(5))
    assert not budget.control()
    time.sleep(0.25)  # 2.5 tokens back
    assert budget.control()


def test_no_rate_means_no_control_limit():
    budget = InboundBudget(rate=None, burst=1)
    assert all(budget.control() for _ in range(10_000))


def test_the_loop_is_told_to_yield_after_a_slice_of_frames_or_bytes():
    budget = InboundBudget(rate=None, burst=1, frames_per_slice=64, bytes_per_slice=1000)
    assert not budget.spend(63, 10)
    assert budget.spend(1, 10)  # 64 frames
    assert not budget.spend(1, 500)
    assert budget.spend(1, 500)  # 1000 bytes


@pytest.mark.parametrize("field", ["header_timeout", "keepalive_timeout", "body_timeout"])
def test_server_timeouts_must_be_positive_or_none(field):
    assert getattr(ServerTimeouts(**{field: None}), field) is None
    with pytest.raises(ValueError):
        ServerTimeouts(**{field: 0})


def test_websocket_options_validate_the_control_frame_limit():
    assert WebSocketOptions().control_frame_rate == 50.0
    with pytest.raises(ValueError):
        WebSocketOptions(control_frame_rate=0)
    with pytest.raises(ValueError):
        WebSocketOptions(control_frame_burst=0)
    with pytest.raises(ValueError):
        WebSocketOptions(slow_close_timeout=0)
