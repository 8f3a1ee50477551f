"""wsbridge.admission's penalty after a flood, on its own (a clock the test moves)."""

from __future__ import annotations

import pytest

from wsbridge import admission
from wsbridge.admission import Admission, LimitOptions


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    return now


def test_a_penalised_address_is_refused_until_its_penalty_ends(clock):
    gate = Admission(LimitOptions(rate_limit_penalty=10.0))
    gate.penalise("192.0.2.1", None)
    assert gate.admit("192.0.2.1", "websocket") is not None
    assert gate.retry_after("192.0.2.1") == 10
    assert gate.admit("192.0.2.2", "websocket") is None
    clock[0] += 10.5
    assert gate.admit("192.0.2.1", "websocket") is None


def test_a_penalised_user_is_refused_and_its_address_is_not(clock):
    gate = Admission(LimitOptions(rate_limit_penalty=10.0))
    gate.penalise("192.0.2.1", "alice")
    assert gate.admit_user("alice") is False
    assert gate.admit("192.0.2.1", "websocket") is None  # its NAT neighbours go on
    assert gate.admit_user("bob") is True


def test_flooding_again_soon_after_doubles_the_penalty_up_to_32_times(clock):
    gate = Admission(LimitOptions(rate_limit_penalty=10.0))
    lengths = []
    for _ in range(8):
        gate.penalise("192.0.2.1", None)
        lengths.append(gate.retry_after("192.0.2.1"))
        clock[0] += lengths[-1] + 1  # reconnects right after, floods again
    assert lengths == [10, 20, 40, 80, 160, 320, 320, 320]
    clock[0] += 10_000  # a long calm: back to the first length
    gate.penalise("192.0.2.1", None)
    assert gate.retry_after("192.0.2.1") == 10


def test_no_penalty_when_turned_off(clock):
    gate = Admission(LimitOptions(rate_limit_penalty=None))
    gate.penalise("192.0.2.1", "alice")
    assert gate.admit("192.0.2.1", "websocket") is None and gate.admit_user("alice")
    with pytest.raises(ValueError, match="rate_limit_penalty"):
        LimitOptions(rate_limit_penalty=0)
