"""Fuzzing the long-poll endpoints: bodies and headers of open / poll / send / close."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.adversarial.harness import exchange, http_request, record
from tests.adversarial.strategies import _ORIGINS, header_text, longpoll_body

LONGPOLL_STATUSES = frozenset({200, 204, 400, 403, 404, 405, 408, 409, 410, 413})


def open_session(site) -> str:
    headers = [("Origin", site.origin)] + ([("Cookie", site.cookie)] if site.cookie else [])
    answer = exchange(
        site.port,
        http_request("POST", "/_wsbridge/lp/open", site.port, b'{"path": "/ws/echo/"}', headers),
    )
    assert answer.status == 200, answer.raw
    return json.loads(answer.body)["token"]


@st.composite
def longpoll_request(draw, port: int, origin: str, cookie: str | None, token: str) -> bytes:
    op = draw(st.sampled_from(["open", "poll", "send", "close", "nope", ""]))
    body = draw(longpoll_body(op, token))
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "OPTIONS", "PUT"]))
    headers: list[tuple[str, str]] = []
    if draw(st.integers(0, 3)):
        headers.append(
            (
                "Origin",
                origin
                if draw(st.integers(0, 3))
                else draw(st.sampled_from(_ORIGINS) | header_text),
            )
        )
    if cookie and draw(st.booleans()):
        headers.append(("Cookie", cookie))
    if draw(st.integers(0, 4)) == 0:
        headers.append(
            (
                "Content-Type",
                draw(
                    st.sampled_from(
                        ["text/plain", "application/json", "multipart/form-data; boundary="]
                    )
                    | header_text
                ),
            )
        )
    length = draw(st.integers(0, 9))
    if length == 0:  # declared longer than sent: the body timeout (or EOF) answers
        headers.append(("Content-Length", str(len(body) + draw(st.integers(1, 50)))))
        return _request(method, op, port, body, headers, declared=False)
    if length == 1:
        headers.append(
            (
                "Content-Length",
                draw(st.sampled_from(["-1", "abc", "1e3", "", " 5", "99999999999999999999"])),
            )
        )
        return _request(method, op, port, body, headers, declared=False)
    if length == 2:  # over max_body
        headers.append(("Content-Length", str(10 * 1024 * 1024)))
        return _request(method, op, port, body, headers, declared=False)
    return _request(method, op, port, body, headers, declared=True)


def _request(method, op, port, body, headers, *, declared: bool) -> bytes:
    return http_request(method, f"/_wsbridge/lp/{op}", port, body, headers, content_length=declared)


def test_every_longpoll_request_gets_a_documented_status(site, watched):
    token = open_session(site)

    @given(request=longpoll_request(site.port, site.origin, site.cookie, token))
    def attack(request: bytes) -> None:
        answer = exchange(site.port, request, deadline=5.0)
        record(f"{site.name}:longpoll", answer.status)
        assert answer.status in LONGPOLL_STATUSES, (request[:400], answer.raw[:400])

    attack()
