"""The ORM under gevent against the real PostgreSQL server (127.0.0.1:5432), through a real server.

Each test run gets a throwaway database. Concurrent consumers sleeping in
PostgreSQL must overlap, not queue behind one another.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from djclient import ws_connect
from djtest_server import DjangoServer, base_env, manage, postgres_database

HERE = Path(__file__).resolve().parent
CLIENTS = 10
SLEEP = 0.5


@pytest.fixture(scope="module")
def pg_server():
    with postgres_database() as name:
        env = base_env(WSBRIDGE_TEST_DB=f"postgres:{name}")
        manage("migrate", "-v", "0", env=env)
        with DjangoServer.wsbridge_serve(env) as running:
            running.database = name
            yield running


def _active_connections(database: str) -> int:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database]
        ).fetchone()
        return int(row[0])


def test_concurrent_consumers_querying_postgresql_overlap(pg_server, record_property):
    results: list[dict] = []
    errors: list[BaseException] = []
    stack = contextlib.ExitStack()
    sockets = [
        stack.enter_context(ws_connect(pg_server.ws_url + "/ws/db/", origin=pg_server.url))
        for _ in range(CLIENTS)
    ]

    def ask(ws):
        try:
            ws.send(json.dumps({"sleep": SLEEP}))
            results.append(json.loads(ws.recv(timeout=30)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(ws,)) for ws in sockets]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wall = time.monotonic() - started
    stack.close()
    assert not errors, errors
    assert len(results) == CLIENTS
    assert all(r["vendor"] == "postgresql" and r["took"] >= SLEEP for r in results)
    assert len({r["backend_pid"] for r in results}) == CLIENTS  # one connection per consumer call
    record_property("pg_concurrent_wall_seconds", round(wall, 3))
    print(
        f"\n{CLIENTS} consumers x pg_sleep({SLEEP}): {wall:.2f} s wall "
        f"(serialized: {CLIENTS * SLEEP:.1f} s)"
    )
    # Serialized would take CLIENTS * SLEEP = 5 s; overlapping takes about SLEEP.
    assert wall < CLIENTS * SLEEP / 2


def test_each_call_releases_its_connection_and_none_leak(pg_server):
    with ws_connect(pg_server.ws_url + "/ws/db/", origin=pg_server.url) as ws:
        pids = []
        for _ in range(3):
            ws.send(json.dumps({"create": "row"}))
            pids.append(json.loads(ws.recv(timeout=10))["backend_pid"])
    # A fresh connection per call: the previous one was closed after the call.
    assert len(set(pids)) == 3
    deadline = time.monotonic() + 10
    while _active_connections(pg_server.database) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active_connections(pg_server.database) == 0


def test_a_query_error_on_postgresql_closes_that_socket_with_1011_and_the_next_call_works(
    pg_server,
):
    from websockets.exceptions import ConnectionClosed

    with ws_connect(pg_server.ws_url + "/ws/db/", origin=pg_server.url) as ws:
        ws.send(json.dumps({"fail": True}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1011
    with ws_connect(pg_server.ws_url + "/ws/db/", origin=pg_server.url) as ws:
        ws.send(json.dumps({}))
        assert json.loads(ws.recv(timeout=10))["vendor"] == "postgresql"


def _greenlet_wall(mode: str, count: int = 5, seconds: float = 0.3) -> float:
    done = subprocess.run(
        [sys.executable, str(HERE / "pg_greenlets.py"), str(count), str(seconds), mode],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip())


def test_psycopg2_blocks_under_gevent_without_psycogreen_and_overlaps_with_it():
    plain, green = _greenlet_wall("plain"), _greenlet_wall("green")
    print(f"\npsycopg2, 5 greenlets x pg_sleep(0.3): plain {plain:.2f} s, psycogreen {green:.2f} s")
    assert plain >= 5 * 0.3 * 0.9  # serialized: the C driver holds the whole process
    assert green < 5 * 0.3 / 2
