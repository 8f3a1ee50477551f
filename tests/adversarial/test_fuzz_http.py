"""Fuzzing an HTTP consumer's request bodies: sizes, framing, chunked encoding."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.adversarial.harness import exchange, record

HTTP_STATUSES = frozenset({200, 400, 405, 408, 411, 413})


@st.composite
def http_consumer_request(draw, port: int) -> tuple[bytes, bytes | None]:
    """A request to /http/echo/ and the body the consumer must echo (None: may be refused)."""
    body = draw(st.binary(max_size=300) | st.sampled_from([b"", b"x" * 70_000]))
    method = draw(st.sampled_from(["POST", "POST", "PUT", "GET"]))
    head = [f"{method} /http/echo/ HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    framing = draw(st.integers(0, 5))
    expect: bytes | None = None
    if framing == 0:
        head.append(f"Content-Length: {len(body)}")
        payload = body
        expect = body if len(body) <= 64 * 1024 else None
    elif framing == 1:  # chunked, well formed
        head.append("Transfer-Encoding: chunked")
        size = draw(st.integers(1, 50))
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        expect = body if len(body) <= 64 * 1024 else None
    elif framing == 2:  # chunked, broken
        head.append("Transfer-Encoding: chunked")
        payload = draw(
            st.sampled_from(
                [
                    b"zz\r\nab\r\n0\r\n\r\n",
                    b"5\r\nab",
                    b"-1\r\n\r\n",
                    b"ffffffffffffffff\r\n",
                    b"3\r\nabcdef\r\n0\r\n\r\n",
                ]
            )
        )
    elif framing == 3:  # declared longer than sent
        head.append(f"Content-Length: {len(body) + draw(st.integers(1, 100))}")
        payload = body
    elif framing == 4:
        head.append("Content-Length: " + draw(st.sampled_from(["-5", "x", "1, 2", "0x10"])))
        payload = body
    else:  # both
        head += [f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"]
        payload = body
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    return request, expect if method in ("POST", "PUT") else None


def test_every_http_consumer_body_gets_a_documented_status(plain_site, watched):
    @given(case=http_consumer_request(plain_site.port))
    def attack(case: tuple[bytes, bytes | None]) -> None:
        request, expect = case
        answer = exchange(plain_site.port, request, deadline=5.0)
        record("plain:http-consumer", answer.status)
        assert answer.status in HTTP_STATUSES, (request[:300], answer.raw[:300])
        if expect is not None and answer.status == 200:
            assert answer.body == expect

    attack()
