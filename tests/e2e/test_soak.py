"""The short soak (about 2 minutes): ``tests/e2e/soak.py`` for 75 s, with its three kills.

A Redis master, a server process and the worker are each killed with
SIGKILL once under mixed traffic (WebSocket, long-poll and SSE clients of
one room, background jobs); what was promised must hold: every background
job accepted on the at-least-once channel runs, every process recovers,
the at-most-once group traffic reaches (nearly) every client that was
connected when it was sent, and no long-poll session is lost: the killed
server's sessions are adopted by the survivor (each message kept once).
The figures are printed. The long run is ``make soak`` (30 minutes, not in CI).
"""

from __future__ import annotations

import pytest

from tests.e2e.soak import run

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]

DURATION = 75.0


def test_short_soak_keeps_its_promises_through_three_kills(tmp_path):
    report = run(DURATION, tmp_path)
    print("\n" + "\n".join(report.lines()))
    assert report.jobs_queued > 50
    assert report.jobs_done == report.jobs_queued  # at-least-once: none lost
    assert report.group_expected > 1000
    assert report.group_delivered >= 0.97 * report.group_expected
    assert report.longpoll_expected > 1000
    assert report.longpoll_delivered >= 0.97 * report.longpoll_expected
    assert report.sse_expected > 1000
    assert report.sse_delivered >= 0.97 * report.sse_expected
    assert report.longpoll_lost == []  # reopened after 404/410: the target is none
    assert report.longpoll_errors == []
    assert report.longpoll_seq_duplicates == report.longpoll_payload_duplicates == 0
    assert report.longpoll_on_killed > 0  # else the adoption below was not exercised
    assert set(report.recoveries) == {
        "redis master kill (first accepted send)",
        "server kill (every client connected again)",
        "server kill (every SSE client connected again)",
        "server kill (long-poll sessions adopted)",
        "worker kill (first job done by the new worker)",
        "server kill (its memberships reaped)",
    }
    assert report.stale_members == 0
    assert all(seconds < 30 for seconds in report.recoveries.values()), report.recoveries
