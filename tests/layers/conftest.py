"""Fixtures for the layer tests: gevent patching and extra Redis servers.

The layers run in greenlets that share one process, so sockets must be
gevent's (a blocking ``BLPOP`` would otherwise stop every greenlet).
"""

from __future__ import annotations

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

import pytest  # noqa: E402

from .redis_server import RedisServer  # noqa: E402


@pytest.fixture
def redis_server(tmp_path):
    """A fresh ``redis-server`` on a free port, stopped (by PID) after the test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_servers(tmp_path):
    """A factory for more ``redis-server`` processes; all are stopped after the test."""
    started: list[RedisServer] = []

    def start(**options) -> RedisServer:
        server = RedisServer(tmp_path / f"r{len(started)}", **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
