"""A Redis layer made before a fork works in the child (gunicorn --preload, uWSGI, not lazy).

A real child interpreter builds the layer, uses it (connections open,
scripts registered), forks, and the forked process uses it again: its own
connections, its own scripts, its own lease. On one Redis and on the
Redis Cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from .test_redis_leases import ROOT

pytestmark = pytest.mark.redis

CHILD = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()  # os.fork is gevent's: the hub is reinit
    import json, os, sys
    from wsbridge.layers.redis import RedisLayer
    layer = RedisLayer(**json.loads(sys.argv[1]))
    before = layer.new_channel()
    layer.group_add("fork.g", before)
    layer.group_add("fork.p", before)
    layer.presence_track("fork.p", before, user="parent")
    layer.send(before, {"type": "x"})
    assert layer.receive(before, timeout=5) == {"type": "x"}
    pid = os.fork()
    if pid == 0:
        try:
            channel = layer.new_channel()
            assert channel != before
            layer.group_add("fork.g", channel)
            layer.group_send("fork.g", {"type": "hello"})
            assert layer.receive(channel, timeout=5) == {"type": "hello"}
            layer.group_add("fork.p", channel)
            layer.presence_track("fork.p", channel, user="child")
            whos = sorted(e.user for e in layer.presence("fork.p"))
            print(json.dumps({"whos": whos}), flush=True)
            layer.close()
        except BaseException as exc:
            print(json.dumps({"error": repr(exc)}), flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    layer.close()
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.fixture
def config(leased_config):
    return leased_config


def test_a_layer_built_before_a_fork_works_in_the_child(config):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AttributeError" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"whos": ["child", "parent"]}
