"""wsbridge serve's header reader reads every header block as the standard library does.

``wsbridge.transport.servers.headers.read_headers`` skips the e-mail parser
for plain ``Name: value`` lines; here it is compared with what pywsgi's own
reader (``http.client.parse_headers`` into gevent's message class) makes of
the same bytes: crafted blocks, then random ones, then a real server.
"""

from __future__ import annotations

import io
from http import client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsbridge.transport.servers.headers import message_class, read_headers

OldMessage = message_class()


def stdlib(data: bytes):
    # gevent.pywsgi's own headers_factory, as it reads a request's headers.
    try:
        return client.parse_headers(io.BytesIO(data), _class=OldMessage)
    except client.LineTooLong:
        message = OldMessage()
        message.status = "Line too long"
        return message


def ours(data: bytes):
    return read_headers(io.BytesIO(data), OldMessage)


def same(data: bytes) -> None:
    try:
        expected = stdlib(data)
    except client.HTTPException as exc:
        with pytest.raises(type(exc)):
            ours(data)
        return
    got = ours(data)
    assert got._headers == expected._headers, data
    assert got.status == expected.status
    assert got.get("content-length") == expected.get("content-length")
    assert list(got.headers) == list(expected.headers)  # what pywsgi's get_environ reads


CRAFTED = [
    b"Host: example.com\r\nContent-Length: 12\r\n\r\nbody",
    b"Host: a\nX-Plain-LF: b\n\n",
    b"Host: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
    b"Empty:\r\nSpaces:    \t lots  \r\n\r\n",
    b"Folded: one\r\n two\r\n\tthree\r\n\r\n",
    b"No colon here\r\nHost: a\r\n\r\n",
    b": empty name\r\n\r\n",
    b"Bad Name: a\r\n\r\n",
    b"From nobody Mon\r\nHost: a\r\n\r\n",
    b"X-Bare-CR: a\rb: c\r\n\r\n",
    b"X-Double-CR: a\r\r\n\r\n",
    b"X-Latin1: caf\xe9\r\n\r\n",
    b"X-Colons: a:b:c\r\n\r\n",
    b"Host: at-eof-without-blank-line",
    b"",
    b"\r\n",
    b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"".join(b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n",
    b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
]


@pytest.mark.parametrize("data", CRAFTED, ids=range(len(CRAFTED)))
def test_crafted_header_blocks_are_read_as_the_standard_library_reads_them(data):
    same(data)


_LINE = st.one_of(
    st.builds(
        lambda name, value, end: name + b":" + value + end,
        st.binary(min_size=0, max_size=12),
        st.binary(max_size=20),
        st.sampled_from([b"\r\n", b"\n", b"\r"]),
    ),
    st.binary(max_size=30).map(lambda b: b + b"\r\n"),
    st.sampled_from([b" folded\r\n", b"\tfolded\r\n", b"Host: x\r\n", b"From x\r\n"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE, max_size=8), st.sampled_from([b"\r\n", b"\n", b""]))
def test_random_header_blocks_are_read_as_the_standard_library_reads_them(lines, end):
    same(b"".join(lines) + end)


def test_a_real_request_through_wsbridge_serve_keeps_its_headers():
    import gevent

    from wsbridge.transport.servers.pywsgi import make_server

    seen = {}

    def app(environ, start_response):
        seen.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
        seen["CONTENT_LENGTH"] = environ.get("CONTENT_LENGTH")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]

    server = make_server(app, "127.0.0.1", 0)
    server.start()
    try:
        with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(
                b"POST /x HTTP/1.1\r\nHost: h\r\nX-Many: 1\r\nX-Many: 2\r\n"
                b"Content-Length: 4\r\nConnection: close\r\n\r\nbody"
            )
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"body")
        assert seen["HTTP_HOST"] == "h" and seen["HTTP_X_MANY"] == "1,2"
        assert seen["CONTENT_LENGTH"] == "4"
    finally:
        server.stop(timeout=1)
