"""A valid upgrade is checked and negotiated by the options' shared negotiator.

Only an invalid request or a refusal gets a handshake protocol of its own;
the shared one must come out of every handshake as it went in.
"""

from __future__ import annotations

import email.utils
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.http11 import Request
from websockets.protocol import CONNECTING, OPEN

from tests.transport.wsclient import read_response
from wsbridge.protocol.connection import Opened, Refused
from wsbridge.transport import ws_connection
from wsbridge.transport.ws_handshake import http_date, negotiate, shared_negotiator
from wsbridge.transport.wsoptions import WebSocketOptions

# RFC 6455 section 1.3: this key's answer is this accept value.
RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _request(**changes: str | None) -> Request:
    values: dict[str, str | None] = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Sec-WebSocket-Version": "13",
    }
    values.update(changes)
    headers = Headers([(k, v) for k, v in values.items() if v is not None])
    return Request(path="/chat", headers=headers)


def _unchanged(options: WebSocketOptions) -> None:
    negotiator = shared_negotiator(options)
    assert negotiator.state is CONNECTING
    assert negotiator.extensions == []
    assert negotiator.data_to_send() == []
    assert not negotiator.eof_sent and negotiator.close_sent is None


def test_a_valid_upgrade_gets_the_rfc_accept_value_and_no_extension():
    options = WebSocketOptions()
    negotiated = negotiate(shared_negotiator(options), _request())
    assert negotiated is not None
    response, extensions = negotiated
    assert response.status_code == 101
    assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Connection"] == "Upgrade"
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert extensions == []
    _unchanged(options)


def test_each_handshake_that_offers_compression_gets_its_own_extension():
    options = WebSocketOptions()
    offer = "permessage-deflate; client_max_window_bits"
    first = negotiate(shared_negotiator(options), _request(**{"Sec-WebSocket-Extensions": offer}))
    second = negotiate(shared_negotiator(options), _request(**{"Sec-WebSocket-Extensions": offer}))
    assert first is not None and second is not None
    assert first[0].headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert isinstance(first[1][0], PerMessageDeflate)
    assert first[1][0] is not second[1][0], "a zlib context shared by two connections"
    _unchanged(options)
    plain = negotiate(
        shared_negotiator(WebSocketOptions(compression=False)),
        _request(**{"Sec-WebSocket-Extensions": offer}),
    )
    assert plain is not None and plain[1] == []
    assert "Sec-WebSocket-Extensions" not in plain[0].headers


@pytest.mark.parametrize(
    "changes",
    [
        {"Sec-WebSocket-Key": None},
        {"Sec-WebSocket-Key": "c2hvcnQ="},
        {"Sec-WebSocket-Version": "8"},
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
    ],
    ids=["no-key", "short-key", "version-8", "not-websocket", "no-upgrade-token"],
)
def test_an_invalid_upgrade_is_left_to_a_protocol_of_its_own(changes):
    options = WebSocketOptions()
    assert negotiate(shared_negotiator(options), _request(**changes)) is None
    _unchanged(options)


def test_the_date_is_the_http_format_of_now():
    parsed = email.utils.parsedate_to_datetime(http_date())
    now = email.utils.parsedate_to_datetime(email.utils.formatdate(usegmt=True))
    assert abs((now - parsed).total_seconds()) <= 1
    assert http_date().endswith(" GMT")


class _Decides:
    """Stands for the consumer's Connection: answers the handshake as soon as it is pushed."""

    def __init__(self, transport: Any, output: Any) -> None:
        self.transport, self.output = transport, output

    def push(self, event: dict[str, Any]) -> None:
        self.transport.consumer_output(self.output)

    def disconnected(self, code: int) -> None:
        pass


def _handshake(
    output: Any, environ_changes: dict[str, str], monkeypatch: Any
) -> tuple[Any, bytes, int]:
    import gevent.socket

    made: list[Any] = []
    real = ws_connection.handshake_protocol

    def counted(options: WebSocketOptions) -> Any:
        made.append(options)
        return real(options)

    monkeypatch.setattr(ws_connection, "handshake_protocol", counted)
    environ = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/chat",
        "HTTP_HOST": "example.com",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": RFC_KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_PROTOCOL": "chat, other",
        **environ_changes,
    }
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    scope = {"client": ["127.0.0.1", 1], "path": "/chat", "subprotocols": ["chat", "other"]}
    options = WebSocketOptions()
    transport = ws_connection.WebSocketTransport(server, scope, options, upgraded=False)
    with listener, client, server:
        opened = transport.handshake(environ, lambda: _Decides(transport, output))
        if not opened:
            transport.finish_rejected()
        status, headers, _ = read_response(client)
    _unchanged(options)
    return transport, (status, headers), len(made)


def test_an_accepted_handshake_makes_no_handshake_protocol(monkeypatch):
    transport, (status, headers), made = _handshake(Opened(subprotocol="chat"), {}, monkeypatch)
    assert status == 101
    assert headers["sec-websocket-accept"] == RFC_ACCEPT
    assert headers["sec-websocket-protocol"] == "chat"
    assert made == 0
    assert transport.protocol.state is OPEN
    assert transport.protocol.subprotocol == "chat"


def test_a_refused_handshake_gets_its_own_protocol_and_closes(monkeypatch):
    transport, (status, _), made = _handshake(Refused(status=403, code=1008), {}, monkeypatch)
    assert status == 403
    assert made == 1
    assert transport.protocol.eof_sent


def test_an_invalid_request_is_answered_by_websockets(monkeypatch):
    changes = {"HTTP_SEC_WEBSOCKET_VERSION": "8"}
    transport, (status, headers), made = _handshake(Opened(), changes, monkeypatch)
    assert status == 400
    assert headers["sec-websocket-version"] == "13"
    assert made == 1


def test_each_thread_negotiates_on_a_protocol_of_its_own():
    """A negotiation's result is read off the negotiator: a real thread gets its own."""
    from gevent import monkey

    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    allocate_lock = monkey.get_original("_thread", "allocate_lock")
    options = WebSocketOptions()
    mine = shared_negotiator(options)
    assert shared_negotiator(options) is mine
    theirs: list = []
    done = allocate_lock()
    done.acquire()

    def other() -> None:
        theirs.append(shared_negotiator(options))
        done.release()

    start_new_thread(other, ())
    assert done.acquire(True, 10)
    assert theirs and theirs[0] is not mine
