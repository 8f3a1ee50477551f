"""Fixtures for the layer tests: extra Redis servers on free ports.

The test process is not monkey-patched (other directories rely on that):
the Redis layer opens its connections with gevent's sockets, so its
blocking reads still only block their own greenlet here.
"""

from __future__ import annotations

import pytest

from .redis_server import RedisServer


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real Redis Cluster (3 masters + 3 replicas) for the session, stopped by PID."""
    from .redis_cluster import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


#: The process lease of the lease and checkpoint tests: a killed process is dead this soon.
LEASE = 1.5


@pytest.fixture(params=["redis", "cluster"])
def leased_config(request):
    """RedisLayer settings with a short lease, on one Redis and on the Redis Cluster."""
    from .redis_helpers import SHARED_REDIS, delete_prefix, unique_prefix

    prefix = unique_prefix()
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        hosts, extra = cluster.urls, {"cluster": True}
    else:
        hosts, extra = [SHARED_REDIS], {}
    yield {
        "hosts": hosts,
        "prefix": prefix,
        "lease": LEASE,
        "block_timeout": 0.2,
        "retry_backoff": [0.02, 0.5],
        **extra,
    }
    if request.param == "redis":
        delete_prefix(SHARED_REDIS, prefix)
    else:
        with request.getfixturevalue("redis_cluster").client() as client:
            for key in list(client.scan_iter(match=prefix + "*")):
                client.unlink(key)
