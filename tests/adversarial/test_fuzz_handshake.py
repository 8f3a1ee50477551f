"""Fuzzing the raw WebSocket handshake: every request head gets a documented answer, fast."""

from __future__ import annotations

from hypothesis import given

from tests.adversarial.harness import DOCUMENTED_STATUSES, exchange, record
from tests.adversarial.strategies import handshake


def test_every_handshake_gets_a_documented_status_and_no_5xx(site, watched):
    @given(request=handshake())
    def attack(request: tuple[bytes, str]) -> None:
        raw, version = request
        answer = exchange(site.port, raw, deadline=5.0)
        record(f"{site.name}:handshake", answer.status)
        if answer.status is None:
            # Closed without an answer: only for a request with no usable request line
            # (pywsgi answers an HTTP/0.9 "GET /path" with a bare body, not a status line).
            first = raw.split(b"\r\n", 1)[0]
            assert len(first.split()) < 3 or not answer.raw or not raw.strip(), answer
            return
        assert answer.status in DOCUMENTED_STATUSES, (answer.status, raw[:300], answer.raw[:300])
        if answer.status == 505:
            assert version != "HTTP/1.1", raw[:300]  # documented: upgrades need HTTP/1.1
        else:
            assert answer.status < 500, (raw[:300], answer.raw[:300])

    attack()
