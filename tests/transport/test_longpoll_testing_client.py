"""wsbridge.testing.LongPollClient in-process, and hand-off corner cases on a wrapped app.

Two wrapped apps on one Redis layer stand for two server processes here (each
transport has its own owner channel), so the corner cases run in milliseconds;
test_longpoll_handoff.py does the same with real processes.
"""

from __future__ import annotations

import secrets

import gevent
import lp_app
import pytest

from wsbridge.exceptions import ConnectionClosed, HTTPError
from wsbridge.layers import build_layer
from wsbridge.protocol.longpoll import TokenSigner
from wsbridge.testing import LongPollClient, use_channel_layer
from wsbridge.transport.wsgi import wrap

SECRET = "in-process-secret-0123456789"


def app_on(layer, **longpoll):
    return wrap(
        lp_app.application,
        router=lp_app.routes,
        layer=layer,
        secret=SECRET,
        longpoll={"poll_timeout": 2, **longpoll},
    )


@pytest.fixture
def memory_app():
    with use_channel_layer() as layer:
        app = app_on(layer)
        yield app
        app.longpoll_transport.close()


@pytest.fixture
def redis_layer():
    layer = build_layer(
        {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": ["redis://127.0.0.1:6379/0"],
                "prefix": "wsbridge-lpc-" + secrets.token_hex(4),
                "max_message_size": 4096,
            },
        }
    )
    yield layer
    layer.flush()
    layer.close()


def test_the_client_talks_to_a_consumer_like_a_page_would(memory_app):
    with LongPollClient(memory_app) as client:
        assert client.open("/ws/scope/x/", subprotocols=["two"]) == "two"
        assert client.receive_json()["transport"] == "longpoll"
    with LongPollClient(memory_app) as client:
        client.open("/ws/echo/")
        client.send("hi")
        client.send(bytes_data=b"\x00\x01")
        client.send_json({"n": 1})
        assert client.receive() == "hi"
        assert client.receive() == b"\x00\x01"
        assert client.receive_json() == {"n": 1}
        assert client.receive_nothing()
        with pytest.raises(TimeoutError):
            client.receive(timeout=0.1)
        client.send("close:4001")
        assert client.receive_close() == 4001
        assert client.closed == (4001, "asked")
        with pytest.raises(ConnectionClosed):
            client.send("too late")


def test_refusals_and_unknown_routes_are_http_errors(memory_app):
    for path, status in (("/ws/refuse/", 403), ("/ws/nowhere/", 404), ("/ws/crash/", 500)):
        with pytest.raises(HTTPError) as refused:
            LongPollClient(memory_app).open(path)
        assert refused.value.status == status


def test_closing_tells_the_consumer(memory_app):
    client = LongPollClient(memory_app)
    client.open("/ws/echo/")
    client.close(4100, "bye")
    with gevent.Timeout(5):  # the consumer runs in this process: yield to it
        while {"event": "disconnect", "path": "/ws/echo/", "code": 4100} not in lp_app.EVENTS:
            gevent.sleep(0.01)


def test_with_one_process_a_restart_still_closes_sessions_with_1012(memory_app):
    client = LongPollClient(memory_app)
    client.open("/ws/echo/")
    transport = memory_app.longpoll_transport
    assert not transport.can_hand_off()
    assert transport.release_sessions() == 1
    assert client.receive_close() == 1012


@pytest.mark.redis
def test_a_session_moves_between_two_transports_on_one_layer(redis_layer):
    old, new = app_on(redis_layer), app_on(redis_layer)
    client = LongPollClient(old, origin="http://testserver")
    client.open("/ws/echo/")
    client.send("unacked")
    old_token = client.token
    assert old.longpoll_transport.hand_off_sessions(timeout=2) == 1
    with pytest.raises(TimeoutError, match="503"):  # the process going away opens nothing
        LongPollClient(old, timeout=0.2).open("/ws/echo/")
    client.target = new  # the next request reaches the other process, which adopts it
    assert client.receive() == "unacked"
    assert TokenSigner.parse(client.token).owner == new.longpoll_transport.owner
    client.send("goes on")
    assert client.receive() == "goes on"
    # the old token still names the session, but only from the Origin it is bound to
    stranger = LongPollClient(new, origin="http://evil.example")
    assert stranger.request("poll", {"token": old_token, "ack": 0, "wait": 0})[0] == 403
    forged = old_token[:-4] + ("AAAA" if not old_token.endswith("AAAA") else "BBBB")
    assert client.request("poll", {"token": forged, "ack": 0, "wait": 0})[0] in (400, 403)
    status, body = client.request("poll", {"token": old_token, "ack": 2, "wait": 0})
    assert (status, body) == (200, {"messages": [], "token": client.token})


@pytest.mark.redis
def test_a_session_the_layer_cannot_carry_is_closed_with_1012_instead(redis_layer):
    old = app_on(redis_layer)
    client = LongPollClient(old)
    client.open("/ws/echo/")
    client.send("x" * 8000)  # echoed and unacked: more than the layer's 4 KiB messages
    assert old.longpoll_transport.hand_off_sessions(timeout=2) == 0
    assert client.receive() == "x" * 8000
    assert client.receive_close() == 1012
