"""Background channels: Worker in-process, start_embedded, and `wsbridge worker` processes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import gevent.subprocess
import pytest

from wsbridge import Channel, SyncConsumer
from wsbridge.consumers.routing import Router
from wsbridge.exceptions import ConfigurationError
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import use_channel_layer
from wsbridge.worker import Worker, select_channels, start_embedded

WSBRIDGE = str(Path(sys.executable).with_name("wsbridge"))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait (cooperatively) until ``condition()`` is true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(0.01)


@pytest.fixture
def layer() -> Iterator[MemoryLayer]:
    with use_channel_layer() as installed:
        yield installed  # type: ignore[misc]


# -- in-process --------------------------------------------------------------------------


def test_each_message_runs_exactly_once_in_a_bounded_pool(layer):
    router = Router()
    seen: list[int] = []
    running = {"now": 0, "max": 0}

    @router.channel("tasks.work")
    def work(message):
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        gevent.sleep(0.005)  # blocking work, cooperatively
        seen.append(message.content["id"])
        running["now"] -= 1

    worker = Worker(layer, router, concurrency=5, poll_timeout=0.1).start()
    layer.capacity = 1000
    for i in range(100):
        Channel("tasks.work").send({"id": i})
    wait_for(lambda: len(seen) == 100, what="100 messages")
    assert worker.stop(timeout=5)
    assert sorted(seen) == list(range(100))
    assert running["max"] == 5
    assert worker.processed == 100 and worker.failed == 0


def test_select_channels_with_only_and_exclude_globs():
    names = ["thumbnails.small", "thumbnails.large", "email.send", "reports"]
    assert select_channels(names) == names
    assert select_channels(names, ["thumbnails.*"]) == ["thumbnails.small", "thumbnails.large"]
    assert select_channels(names, ["thumbnails.*", "email.*"], ["*.large"]) == [
        "thumbnails.small",
        "email.send",
    ]
    assert select_channels(names, None, ["*"]) == []


def test_worker_only_receives_the_selected_channels(layer):
    router = Router()
    got: list[str] = []
    for name in ("a.one", "a.two", "b.one"):
        router.channel(name)(lambda message, name=name: got.append(name))
    worker = Worker(
        layer, router, only_channels=["a.*"], exclude_channels=["*.two"], poll_timeout=0.1
    )
    assert worker.channels == ["a.one"]
    worker.start()
    for name in ("a.one", "a.two", "b.one"):
        layer.send(name, {})
    wait_for(lambda: got == ["a.one"])
    worker.stop()
    assert layer.receive("a.two", timeout=0) == {} and layer.receive("b.one", timeout=0) == {}


def test_message_object_and_reply_channel(layer):
    router = Router()
    received = []
    router.channel("jobs")(received.append)
    Worker(layer, router).drain(timeout=0)
    layer.send("jobs", {"reply_channel": "specific.x!y", "n": 1})
    assert Worker(layer, router).drain() == 1
    message = received[0]
    assert message.content == {"reply_channel": "specific.x!y", "n": 1}
    assert message.channel.name == "jobs" and message.channel_layer is layer
    assert message.reply_channel.name == "specific.x!y"


def test_channels_4_sync_consumer_classes_dispatch_by_type(layer):
    router = Router()
    done = []

    @router.channel("thumbnails-generate")
    class Generate(SyncConsumer):
        def generate_thumbnail(self, message):
            assert self.scope == {"type": "channel", "channel": "thumbnails-generate"}
            done.append(message["id"])

        def try_to_reply(self, message):
            self.send({"type": "websocket.send", "text": "x"})

    layer.send("thumbnails-generate", {"type": "generate.thumbnail", "id": 7})
    layer.send("thumbnails-generate", {"type": "try.to.reply"})
    worker = Worker(layer, router)
    assert worker.drain() == 2
    assert done == [7] and worker.failed == 1


def test_a_failing_consumer_is_logged_once_and_the_worker_goes_on(layer, caplog):
    router = Router()
    ok = []

    @router.channel("flaky")
    def flaky(message):
        if message["fail"]:
            raise ValueError("bad input 42")
        ok.append(1)

    for fail in (True, False):
        layer.send("flaky", {"fail": fail})
    worker = Worker(layer, router)
    with caplog.at_level(logging.ERROR, logger="wsbridge.worker"):
        worker.drain()
    assert ok == [1] and worker.failed == 1 and worker.processed == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "flaky" in errors[0].getMessage()
    assert "bad input 42" in caplog.text and caplog.text.count("Traceback") == 1


def test_delayed_send_runs_later(layer):
    router = Router()
    ran_at: list[float] = []
    router.channel("later")(lambda message: ran_at.append(time.monotonic()))
    worker = start_embedded(layer, router, poll_timeout=0.1)
    sent_at = time.monotonic()
    Channel("later").send({"x": 1}, delay=0.3)
    gevent.sleep(0.2)
    assert ran_at == []
    wait_for(lambda: ran_at, what="the delayed message")
    assert ran_at[0] - sent_at >= 0.3
    worker.stop()


def test_stop_finishes_messages_in_hand_and_leaves_the_rest(layer):
    router = Router()
    started, finished = [], []

    @router.channel("slow")
    def slow(message):
        started.append(message["id"])
        gevent.sleep(0.3)
        finished.append(message["id"])

    worker = Worker(layer, router, concurrency=2, poll_timeout=0.1).start()
    for i in range(5):
        layer.send("slow", {"id": i})
    wait_for(lambda: len(started) == 2, what="two messages in hand")
    assert worker.stop(timeout=5) is True
    assert sorted(finished) == sorted(started)
    # Nothing lost: every message either ran to the end or is still on the channel.
    left = []
    while (message := layer.receive("slow", timeout=0)) is not None:
        left.append(message["id"])
    assert sorted(finished + left) == list(range(5))
    assert worker.stopped


def test_start_embedded_runs_background_channels_of_the_default_router(layer):
    from wsbridge import router as default_router

    got = []
    saved = dict(default_router._channels)
    default_router.channel("embedded.test")(lambda message: got.append(message["v"]))
    try:
        worker = start_embedded(poll_timeout=0.1)
        assert worker.layer is layer and "embedded.test" in worker.channels
        Channel("embedded.test").send({"v": "from a view"})
        wait_for(lambda: got == ["from a view"])
        assert worker.stop()
    finally:
        default_router._channels = saved  # other modules register on it too


def test_bad_worker_options_are_configuration_errors(layer):
    with pytest.raises(ConfigurationError, match="concurrency must be at least 1"):
        Worker(layer, Router(), concurrency=0)
    from wsbridge.worker import layer_from_option

    with pytest.raises(ConfigurationError, match="use 'memory', a redis:// URL"):
        layer_from_option("nonsense")
    assert isinstance(layer_from_option("memory"), MemoryLayer)


# -- `wsbridge worker` processes (Redis) -------------------------------------------------

CONSUMER_MODULE = """
import os
import time

from wsbridge import router

OUT = os.environ["WSB_TEST_OUT"]


def _write(line):
    with open(OUT, "a") as f:
        f.write(line + "\\n")


@router.channel("tests.work")
def work(message):
    _write(f"done {message.content['id']} {os.getpid()}")


@router.channel("tests.slow")
def slow(message):
    _write(f"start {message.content['id']}")
    time.sleep(message.content["sleep"])  # monkey-patched by `wsbridge worker`
    _write(f"end {message.content['id']}")
"""


def start_worker(tmp_path: Path, prefix: str, module: str, out: Path) -> gevent.subprocess.Popen:
    """Run `wsbridge worker` on Redis with ``prefix``; return once it says it is ready."""
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
            "--concurrency",
            "4",
            "--log-level",
            "info",
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
def worker_process(tmp_path):
    """Start `wsbridge worker` on Redis with a random prefix.

    Yields (process, layer, output file, start_another) where ``start_another()``
    starts one more worker process on the same prefix.
    """
    from wsbridge.layers.redis import RedisLayer

    module = f"bgconsumers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(CONSUMER_MODULE))
    out = tmp_path / "out.txt"
    out.touch()
    prefix = f"wsbtest{uuid.uuid4().hex[:10]}"
    procs = [start_worker(tmp_path, prefix, module, out)]
    layer = RedisLayer(hosts=["redis://127.0.0.1:6379/0"], prefix=prefix)

    def another() -> gevent.subprocess.Popen:
        procs.append(start_worker(tmp_path, prefix, module, out))
        return procs[-1]

    try:
        yield procs[0], layer, out, another
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        layer.flush()
        layer.close()


def lines(out: Path) -> list[str]:
    return out.read_text().splitlines()


@pytest.mark.redis
def test_a_separate_worker_process_runs_each_message_once(worker_process):
    proc, layer, out, _ = worker_process
    for i in range(20):
        Channel("tests.work", channel_layer=layer).send({"id": i})
    wait_for(lambda: len(lines(out)) >= 20, timeout=10, what="20 messages in the worker")
    gevent.sleep(0.2)  # any duplicate would have landed by now
    done = [line.split() for line in lines(out)]
    assert sorted(int(d[1]) for d in done) == list(range(20))  # each exactly once
    assert {d[2] for d in done} == {str(proc.pid)} and proc.pid != os.getpid()
    # A delayed send waits in Redis, then runs once in the worker.
    sent_at = time.monotonic()
    Channel("tests.work", channel_layer=layer).send({"id": 100}, delay=0.5)
    wait_for(
        lambda: any(x.startswith("done 100 ") for x in lines(out)),
        timeout=10,
        what="the delayed message",
    )
    assert time.monotonic() - sent_at >= 0.5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


@pytest.mark.redis
def test_two_worker_processes_share_the_work_and_still_run_each_message_once(worker_process):
    first, layer, out, start_another = worker_process
    second = start_another()
    for i in range(60):
        Channel("tests.work", channel_layer=layer).send({"id": i})
    wait_for(lambda: len(lines(out)) >= 60, timeout=10, what="60 messages in two workers")
    gevent.sleep(0.2)
    done = [line.split() for line in lines(out)]
    assert sorted(int(d[1]) for d in done) == list(range(60))
    assert {d[2] for d in done} <= {str(first.pid), str(second.pid)}
    for proc in (first, second):
        proc.send_signal(signal.SIGTERM)
    assert first.wait(timeout=10) == 0 and second.wait(timeout=10) == 0


@pytest.mark.redis
def test_sigterm_finishes_messages_in_hand_then_exits(worker_process):
    proc, layer, out, _ = worker_process
    for i in range(2):
        Channel("tests.slow", channel_layer=layer).send({"id": i, "sleep": 1.0})
    wait_for(
        lambda: sum(x.startswith("start") for x in lines(out)) == 2,
        timeout=10,
        what="both slow messages to start",
    )
    proc.send_signal(signal.SIGTERM)
    for i in range(2, 5):  # sent while the worker is stopping
        Channel("tests.slow", channel_layer=layer).send({"id": i, "sleep": 0.1})
    assert proc.wait(timeout=15) == 0
    log = proc.stdout.read()
    events = [line.split() for line in lines(out)]
    started = {int(e[1]) for e in events if e[0] == "start"}
    ended = {int(e[1]) for e in events if e[0] == "end"}
    assert {0, 1} <= ended and started == ended, (events, log)
    assert "finishing messages in hand" in log and "worker stopped" in log
    # Nothing lost: each later message ran to its end, or is still waiting in Redis.
    left = set()
    while (message := layer.receive("tests.slow", timeout=0.2)) is not None:
        left.add(message["id"])
    assert ended | left == {0, 1, 2, 3, 4} and not ended & left


def test_worker_command_errors_are_clear(tmp_path):
    result = gevent.subprocess.run(
        [WSBRIDGE, "worker", "--layer", "memory", "--consumers", "no_such_module_xyz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot import consumer module 'no_such_module_xyz'" in result.stderr
    result = gevent.subprocess.run(
        [WSBRIDGE, "worker", "--layer", "memory"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "no background channel to run" in result.stderr
