"""At-least-once background channels: a `wsbridge worker` killed -9 mid-message.

Real worker processes on the real Redis (random prefix): the consumer
writes ``start <id>`` then sleeps on its first attempt (the worker is killed
there) and writes ``end <id>`` on a later one. With ``--at-least-once`` the
message runs again on another worker after the visibility timeout; without
it (the default) it is gone, as documented.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

import gevent
import gevent.subprocess
import pytest

from wsbridge import Channel
from wsbridge.layers.redis import RedisLayer

pytestmark = pytest.mark.redis

WSBRIDGE = str(Path(sys.executable).with_name("wsbridge"))
VISIBILITY = 1.5

CONSUMERS = """
import os
import time

from wsbridge import router

OUT = os.environ["WSB_TEST_OUT"]


def _write(line):
    with open(OUT, "a") as f:
        f.write(line + "\\n")


def _first_attempt(key):
    marker = OUT + "." + key
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


def _job(name, message):
    key = f"{name}-{message.content['id']}"
    _write(f"start {key} {os.getpid()}")
    if message.content.get("hang") and _first_attempt(key):
        time.sleep(120)  # killed here
    _write(f"end {key} {os.getpid()}")


@router.channel("jobs.reliable")
def reliable(message):
    _job("reliable", message)


@router.channel("jobs.plain")
def plain(message):
    _job("plain", message)
"""


def _start(tmp_path: Path, prefix: str, module: str, out: Path) -> gevent.subprocess.Popen:
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    env = {**os.environ, "WSB_TEST_OUT": str(out), "PYTHONPATH": str(tmp_path)}
    proc = gevent.subprocess.Popen(
        [
            WSBRIDGE,
            "worker",
            "--layer",
            url,
            "--consumers",
            module,
            "--at-least-once",
            "jobs.reliable",
            "--visibility-timeout",
            str(VISIBILITY),
        ],
        cwd=tmp_path,
        env=env,
        stdout=gevent.subprocess.PIPE,
        stderr=gevent.subprocess.STDOUT,
        text=True,
    )
    ready = proc.stdout.readline()
    assert "ready" in ready, ready + proc.stdout.read()
    return proc


@pytest.fixture
def workers(tmp_path):
    module = f"alo_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(CONSUMERS))
    out = tmp_path / "out.txt"
    out.touch()
    prefix = f"wsbtest{uuid.uuid4().hex[:10]}"
    procs: list[gevent.subprocess.Popen] = []
    layer = RedisLayer(hosts=["redis://127.0.0.1:6379/0"], prefix=prefix)

    def start() -> gevent.subprocess.Popen:
        procs.append(_start(tmp_path, prefix, module, out))
        return procs[-1]

    try:
        yield start, layer, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        layer.flush()
        layer.close()


def lines(out: Path) -> list[str]:
    return out.read_text().splitlines()


def wait_lines(out: Path, predicate, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in lines(out) if predicate(line)]
        if found:
            return found
        gevent.sleep(0.02)
    raise AssertionError(f"no matching line within {timeout}s: {lines(out)}")


def _kill(proc: gevent.subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_message_held_by_a_killed_worker_runs_again_elsewhere(workers):
    start, layer, out = workers
    first = start()
    Channel("jobs.reliable", channel_layer=layer).send({"id": 1, "hang": True})
    wait_lines(out, lambda line: line.startswith("start reliable-1"), timeout=10)
    _kill(first)
    killed_at = time.monotonic()
    second = start()
    done = wait_lines(out, lambda line: line.startswith("end reliable-1"), timeout=VISIBILITY + 10)
    redelivered_after = time.monotonic() - killed_at
    assert done == [f"end reliable-1 {second.pid}"]
    assert [line.split()[0] for line in lines(out)] == ["start", "start", "end"]
    assert redelivered_after >= VISIBILITY * 0.5  # not before its reservation ran out
    print(f"\nredelivered {redelivered_after:.2f}s after the kill (visibility {VISIBILITY}s)")


def test_an_at_most_once_message_held_by_a_killed_worker_is_not_run_again(workers):
    start, layer, out = workers
    first = start()
    Channel("jobs.plain", channel_layer=layer).send({"id": 1, "hang": True})
    wait_lines(out, lambda line: line.startswith("start plain-1"), timeout=10)
    _kill(first)
    start()
    gevent.sleep(VISIBILITY * 2 + 1)
    assert [line.split()[:2] for line in lines(out)] == [["start", "plain-1"]]


def test_finished_at_least_once_messages_run_once(workers):
    start, layer, out = workers
    start()
    start()
    for i in range(30):
        Channel("jobs.reliable", channel_layer=layer).send({"id": i})
    wait_lines(out, lambda line: line.startswith("end reliable-29"), timeout=10)
    gevent.sleep(VISIBILITY * 2 + 0.5)  # a missing ack would have brought some back
    ends = sorted(line.split()[1] for line in lines(out) if line.startswith("end"))
    assert ends == sorted(f"reliable-{i}" for i in range(30))
