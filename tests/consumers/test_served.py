"""The execution model through a real `wsbridge serve` process and real WebSocket clients.

The in-process tests (test_runner.py) check ordering exactly; these check what
only a real server shows: a consumer calling the plain blocking ``time.sleep``
does not delay other connections (the server monkey-patched the process), and
a consumer that raises closes its own socket with 1011, with one traceback in
the server's log, while other sockets go on.
"""

from __future__ import annotations

import time

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

pytestmark = pytest.mark.slow


@pytest.fixture
def server(wsbridge_serve):
    return wsbridge_serve("tests.consumers.served_app")


def test_a_sleeping_consumer_does_not_delay_other_connections(server):
    with (
        connect(server.ws_url("/ws/sleep/")) as sleeper,
        connect(server.ws_url("/ws/echo/")) as other,
    ):
        started = time.monotonic()
        sleeper.send("1.5")
        for i in range(50):
            other.send(str(i))
            assert other.recv(timeout=5) == str(i)
        others_done = time.monotonic() - started
        assert sleeper.recv(timeout=10) == "slept"
        slept = time.monotonic() - started
    assert others_done < 1.0, others_done
    assert slept >= 1.5


def test_a_raising_consumer_closes_its_socket_with_1011_and_logs_once(server):
    with (
        connect(server.ws_url("/ws/crash/")) as victim,
        connect(server.ws_url("/ws/crash/")) as bystander,
    ):
        victim.send("boom")
        with pytest.raises(ConnectionClosedError) as info:
            victim.recv(timeout=5)
        assert info.value.rcvd.code == 1011
        bystander.send("still fine")
        assert bystander.recv(timeout=5) == "still fine"
    log = server.log()
    assert log.count("Traceback") == 1, log
    assert log.count("RuntimeError: served consumer exploded") == 1
    assert "closing this connection with 1011" in log
