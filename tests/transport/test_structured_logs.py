"""A connection id on every log record about a connection, and the JSON formatter."""

from __future__ import annotations

import json
import logging
import os

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.transport.wsclient import frame, open_raw, read_frame
from wsbridge import Router, WebsocketConsumer, wrap
from wsbridge.logs import ConnectionIdFilter, JSONFormatter, new_connection_id

router = Router()
app_logger = logging.getLogger("tests.structured")


@router.websocket("echo/")
class LoggingEcho(WebsocketConsumer):
    def connect(self) -> None:
        app_logger.info("connected")
        self.accept()

    def receive(self, text_data=None, bytes_data=None) -> None:
        if text_data == "boom":
            raise RuntimeError("boom on purpose")
        app_logger.info("got %s", text_data, extra={"room": "lobby"})
        self.send(text_data=text_data)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JSONFormatter(static={"service": "test"}))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines():
    handler = Lines()
    loggers = [logging.getLogger("wsbridge"), app_logger]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_one_connections_lines_share_its_id_and_another_has_its_own(gevent_server, lines):
    server = gevent_server(wrap(lambda e, s: [], router=router))
    with connect(server.ws_url("/echo/")) as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
    with connect(server.ws_url("/echo/")) as ws:
        ws.send("boom")  # the consumer raises: runner's ERROR line, traceback included
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)  # closed with 1011
    # A client sending invalid UTF-8: the transport's own INFO line (request greenlet).
    sock, _ = open_raw(server.port, "/echo/")
    sock.sendall(frame(0x1, b"\xff\xfe", mask=True))
    read_frame(sock)
    sock.close()
    records = [json.loads(line) for line in lines.lines]
    by_message = {r["message"]: r for r in records}
    first = by_message["got one"]
    assert first["room"] == "lobby" and first["service"] == "test"
    assert first["level"] == "INFO" and first["logger"] == "tests.structured"
    ids = [r.get("connection_id") for r in records if r["message"] == "connected"]
    assert len(ids) == 3 and len(set(ids)) == 3 and all(ids), records
    assert first["connection_id"] == ids[0]
    failed = next(r for r in records if "raised handling" in r["message"])
    assert failed["connection_id"] == ids[1]
    assert "boom on purpose" in failed["exc_info"]
    utf8 = next(r for r in records if "invalid UTF-8" in r["message"])
    assert utf8["connection_id"] == ids[2]


def test_the_filter_gives_text_formats_the_id_and_a_dash_outside_connections():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    assert ConnectionIdFilter().filter(record)
    assert record.connection_id == "-"
    first, second = new_connection_id(), new_connection_id()
    assert first != second and first.split("-")[0] == f"{os.getpid():x}"
