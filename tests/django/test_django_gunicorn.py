"""Deployment: stock ``gunicorn -k gevent -w 2`` on the Redis layer, and graceful restart."""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import time

import pytest
from djclient import http_get, ws_connect
from djtest_server import DjangoServer, base_env, manage
from websockets.exceptions import ConnectionClosed

from tests.conftest import sockets_on_two_workers

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def redis_env(tmp_path_factory):
    db = tmp_path_factory.mktemp("djgunicorn") / "db.sqlite3"
    env = base_env(
        WSBRIDGE_TEST_DB=f"sqlite:{db}", WSBRIDGE_TEST_REDIS_PREFIX=f"wsbg{secrets.token_hex(4)}"
    )
    manage("migrate", "-v", "0", env=env)
    return env


def on_two_workers(server, stack, path="/ws/notes-pid/main/"):
    """One socket on each of two gunicorn workers: {pid: socket}."""
    return sockets_on_two_workers(
        lambda: ws_connect(server.ws_url + path, origin=server.url), stack
    )


def test_memory_layer_under_two_gunicorn_workers_refuses_to_boot_with_the_reason(tmp_path):
    env = base_env(WSBRIDGE_TEST_DB=f"sqlite:{tmp_path / 'db.sqlite3'}")
    server = DjangoServer.gunicorn(env, workers=2)
    with pytest.raises(RuntimeError):
        server.start(timeout=30)
    log = server.log()
    server.stop()
    assert "wsbridge.E006" in log and "Redis" in log


def test_group_messages_reach_sockets_on_both_workers_through_redis(redis_env):
    with DjangoServer.gunicorn(redis_env, workers=2) as server, contextlib.ExitStack() as stack:
        sockets = on_two_workers(server, stack)
        manage(
            "shell",
            "-v",
            "0",
            "-c",
            "from djtest.models import Note; Note.objects.create(title='hi')",
            env=redis_env,
        )
        for pid, ws in sockets.items():
            event = json.loads(ws.recv(timeout=10))
            assert event["payload"]["action"] == "create", pid
        assert http_get(server.url + "/")[1] == "ordinary page ok"


def test_reload_closes_sockets_with_1012_and_clients_reconnect_to_new_workers(redis_env):
    with DjangoServer.gunicorn(redis_env, workers=2) as server, contextlib.ExitStack() as stack:
        sockets = on_two_workers(server, stack)
        old_pids = set(sockets)
        started = time.monotonic()
        server.signal(signal.SIGHUP)  # gunicorn: new workers, SIGTERM to the old ones
        codes = []
        for ws in sockets.values():
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=15)
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
        elapsed = time.monotonic() - started
        assert codes == [1012, 1012]
        assert elapsed < 10  # well under --graceful-timeout 20: the workers did not wait it out
        server.wait_for_log("with 1012 (service restart)")
        deadline = time.monotonic() + 20
        new_pid = None
        while time.monotonic() < deadline:
            try:
                with ws_connect(server.ws_url + "/ws/whoami/", origin=server.url) as again:
                    new_pid = json.loads(again.recv(timeout=10))["pid"]
                    if new_pid not in old_pids:
                        break
            except (OSError, ConnectionClosed):
                pass
            time.sleep(0.1)
        assert new_pid is not None and new_pid not in old_pids
        print(
            f"\nSIGHUP -> both sockets closed with 1012 in {elapsed:.2f} s; "
            f"reconnected to worker {new_pid}"
        )


def test_reload_hands_long_poll_sessions_over_to_the_new_workers(redis_env):
    import threading

    from wsbridge.testing import LongPollClient

    with DjangoServer.gunicorn(redis_env, workers=2) as server:
        client = LongPollClient(server.url, origin=server.url, timeout=20)
        client.open("/ws/whoami/")
        old_pid = client.receive_json()["pid"]
        answers = []
        parked = threading.Thread(
            target=lambda: answers.append(client.request("poll", client.session.poll_body()))
        )
        parked.start()
        time.sleep(0.3)  # let the poll park (nothing observable from outside tells it has)
        started = time.monotonic()
        server.signal(signal.SIGHUP)
        parked.join(30)
        elapsed = time.monotonic() - started
        assert answers, "the parked poll never returned"
        # answered at once with an empty batch: no close, the session goes on
        assert answers[0] == (200, {"messages": []}), answers
        assert elapsed < 10  # not the 25 s poll timeout nor the graceful timeout
        # The next polls reach a new worker (the old one stops accepting), which adopts
        # the session: its consumer connects again and says who it is, as seq 2.
        identity = client.receive_json(timeout=20)
        assert identity["pid"] != old_pid and client.session.seen == 2
        assert client.closed is None
        print(
            f"\nSIGHUP -> parked long-poll answered (empty) in {elapsed:.2f} s; "
            f"session adopted by worker {identity['pid']}"
        )
        client.close()
