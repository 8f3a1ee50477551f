"""Channels code ported by changing imports and settings only, through real processes.

The site is djtest configured as a Channels 1.x site (``WSBRIDGE_TEST_LEGACY``:
``CHANNEL_LAYERS`` with the ``asgi_redis`` BACKEND name and a ``ROUTING``
entry, no ``WSBRIDGE`` settings), served by ``wsbridge serve --no-worker``,
with background channels in a separate ``manage.py runworker`` process, both
on the real Redis. The code under djtest/legacy/ is Channels code with only
its import lines changed (each says what it was).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import time

import pytest
from djclient import http_get, login_cookie, ws_connect, ws_refusal
from djtest_server import HERE, PY, DjangoServer, base_env, manage

pytestmark = pytest.mark.slow

PREFIX = f"wsbt13{secrets.token_hex(4)}"


def _redis_cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(server, worker process, env, db path): the legacy site, its worker and Redis."""
    db = tmp_path_factory.mktemp("legacy") / "db.sqlite3"
    env = base_env(
        WSBRIDGE_TEST_DB=f"sqlite:{db}",
        WSBRIDGE_TEST_LEGACY="1",
        WSBRIDGE_TEST_REDIS_PREFIX=PREFIX,
    )
    manage("migrate", "-v", "0", env=env)
    manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('ada', password='pw')",
        env=env,
    )
    worker_log = tmp_path_factory.mktemp("legacy-worker") / "worker.log"
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen(
            [PY, str(HERE / "manage.py"), "runworker"],
            env=env,
            cwd=str(HERE),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = DjangoServer(
        [PY, "-m", "wsbridge", "serve", "djtest.wsgi", "--port", "0", "--no-worker"], env
    )
    try:
        with server:
            yield server, worker, worker_log, db
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        _redis_cleanup(PREFIX)


def recv_json(ws, timeout: float = 10.0):
    return json.loads(ws.recv(timeout=timeout))


# -- 1. Channels 4 sync code: async_to_sync from wsbridge ------------------------------


def test_channels4_tutorial_chat_runs_with_wsbridge_async_to_sync(site):
    server, *_ = site
    url = server.ws_url + "/ws/chat/lobby/"
    with ws_connect(url, origin=server.url) as alice, ws_connect(url, origin=server.url) as bob:
        alice.send(json.dumps({"message": "hello"}))
        assert recv_json(alice) == {"message": "hello"}
        assert recv_json(bob) == {"message": "hello"}
        # a Django view with get_channel_layer() from wsbridge.layers
        status, body, _ = http_get(server.url + "/legacy/announce/lobby/?message=from-view")
        assert (status, body) == (200, "sent")
        assert recv_json(alice) == {"message": "from-view"}
        assert recv_json(bob) == {"message": "from-view"}


def test_asgiref_async_to_sync_left_in_names_the_one_line_fix(site):
    server, *_ = site
    assert ws_refusal(server.ws_url + "/ws/unported/", origin=server.url) == 500
    log = server.wait_for_log("from wsbridge import async_to_sync")
    assert "channel_layer.group_add() is synchronous in wsbridge" in log
    assert "can't be used in 'await' expression" not in log


# -- 2. routing and settings as 1.x accepted them ----------------------------------------


def test_legacy_settings_are_honoured_with_deprecation_notes(site):
    server, *_ = site
    log = server.wait_for_log('CHANNEL_LAYERS["default"]["ROUTING"]')
    assert 'WSBRIDGE = {"ROUTING": "djtest.legacy.routing.channel_routing"}' in log
    assert "'asgi_redis.RedisChannelLayer' is a Channels 1.x name" in log
    assert "Write BACKEND 'redis' instead" in log


# -- 3. sessions across channels, 5. unanswered connect ------------------------------------


def test_multichat_session_and_user_reach_the_worker_and_back(site):
    server, worker, _, db = site
    cookie = login_cookie(server.url, "ada", "pw")
    url = server.ws_url + "/legacy/chat/"
    with (
        ws_connect(url, cookie=cookie, origin=server.url) as ada,
        ws_connect(url, origin=server.url) as anon,
    ):
        ada.send(json.dumps({"command": "join", "room": "lobby"}))
        joined = recv_json(ada)
        # chat_join ran in the worker, and found ada's user by the reply channel
        assert joined == {"join": "lobby", "user": "ada", "pid": worker.pid}
        anon.send(json.dumps({"command": "join", "room": "lobby"}))
        assert recv_json(anon)["user"] is None
        # chat_send reads the rooms chat_join stored in the channel session
        ada.send(json.dumps({"command": "send", "room": "lobby", "message": "hi"}))
        expected = {"room": "lobby", "user": "ada", "message": "hi"}
        assert recv_json(ada) == expected
        assert recv_json(anon) == expected
        anon.send(json.dumps({"command": "send", "room": "attic", "message": "x"}))
        assert recv_json(anon) == {"error": "not in room attic"}
        ada.close()
        # ws_disconnect, in the server, saw the rooms the worker wrote
        assert recv_json(anon) == {"left": "lobby", "user": "ada", "rooms": ["lobby"]}
    # each decorated disconnect deleted its connection's channel session
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(db) as conn:
            left = conn.execute(
                "SELECT COUNT(*) FROM django_session WHERE session_key LIKE 'chn%'"
            ).fetchone()[0]
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == 0


def test_connect_that_neither_accepts_nor_refuses_gets_403_and_one_info_line(site):
    server, *_ = site
    for _ in range(3):
        assert ws_refusal(server.ws_url + "/legacy/silent/", origin=server.url) == 403
    log = server.wait_for_log("refused websocket /legacy/silent/ with 403")
    assert "djtest.legacy.chat.silent_connect returned without accepting or refusing" in log
    assert log.count("refused websocket /legacy/silent/ with 403") == 1


# -- 4. data binding -----------------------------------------------------------------------


def _frames_until(ws, predicate, limit: int = 10):
    for _ in range(limit):
        frame = recv_json(ws)
        if predicate(frame):
            return frame
    raise AssertionError("no matching frame")


def test_slider_binding_updates_a_unique_field_and_deletes_carry_fields(site):
    server, *_ = site
    url = server.ws_url + "/legacy/intval/"
    with ws_connect(url, origin=server.url) as ws, ws_connect(url, origin=server.url) as other:
        ws.send(
            json.dumps(
                {
                    "stream": "intval",
                    "payload": {"action": "create", "data": {"name": "slider", "value": 1}},
                }
            )
        )
        created = recv_json(other)["payload"]
        assert created["action"] == "create"
        assert created["data"] == {"name": "slider", "value": 1}
        pk = created["pk"]
        assert recv_json(ws)["payload"]["pk"] == pk
        # the classic slider: the unique name is sent back unchanged with each move
        for value in (5, 7):
            ws.send(
                json.dumps(
                    {
                        "stream": "intval",
                        "payload": {
                            "action": "update",
                            "pk": pk,
                            "data": {"name": "slider", "value": value},
                        },
                    }
                )
            )
            for client in (ws, other):
                frame = recv_json(client)
                assert frame == {
                    "stream": "intval",
                    "payload": {
                        "action": "update",
                        "pk": pk,
                        "model": "djtest.integervalue",
                        "data": {"name": "slider", "value": value},
                    },
                }
        # a second row may not take the name
        ws.send(
            json.dumps(
                {
                    "stream": "intval",
                    "payload": {"action": "create", "data": {"name": "slider", "value": 2}},
                }
            )
        )
        error = recv_json(ws)["payload"]
        assert error["action"] == "create" and "already exists" in error["error"]
        ws.send(json.dumps({"stream": "intval", "payload": {"action": "delete", "pk": pk}}))
        deleted = recv_json(other)["payload"]
        assert deleted == {
            "action": "delete",
            "pk": pk,
            "model": "djtest.integervalue",
            "data": {"name": "slider", "value": 7},
        }


def test_channels10_binding_routed_on_a_channel_sees_the_connections_user(site):
    server, *_ = site
    cookie = login_cookie(server.url, "ada", "pw")
    url = server.ws_url + "/legacy/notes/"
    with (
        ws_connect(url, cookie=cookie, origin=server.url) as ada,
        ws_connect(url, origin=server.url) as anon,
    ):
        anon.send(
            json.dumps(
                {
                    "stream": "v1notes",
                    "payload": {"action": "create", "data": {"title": "anonymous", "board": "v1"}},
                }
            )
        )
        assert recv_json(anon) == {
            "stream": "v1notes",
            "payload": {"error": "permission denied", "action": "create"},
        }
        ada.send(
            json.dumps(
                {
                    "stream": "v1notes",
                    "payload": {"action": "create", "data": {"title": "by ada", "board": "v1"}},
                }
            )
        )
        for client in (ada, anon):
            frame = _frames_until(client, lambda f: f["payload"].get("action") == "create")
            assert frame["stream"] == "v1notes"
            assert frame["payload"]["data"] == {"title": "by ada", "board": "v1"}


def test_the_worker_ran_the_background_channels(site):
    _, worker, worker_log, _ = site
    assert worker.poll() is None
    text = worker_log.read_text(errors="replace")
    assert "chat.receive" in text and "binding.v1notes" in text, text
