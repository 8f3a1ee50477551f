"""Scale-out end to end: several serving processes, one worker, two Redis shards (issue 4.7).

Every process here is real and started by the test on free loopback ports:
two ``redis-server`` shards, two serving processes (two ``wsbridge serve
--no-worker``, or one ``gunicorn -k gevent -w 2``), one ``wsbridge worker``,
and a plain Python process that sends to a group from outside. All of them
list both shards. What must hold:

* clients of one room (a group) connected to different processes all get a
  broadcast, whether it comes from a consumer in either process or from the
  plain process; clients of another room (on the other shard) get none of it;
* a background message sent from either serving process runs exactly once,
  in the worker: the worker writes ``<id> <its pid> <sender pid>`` to a file
  (and tells the room), and the file is read after every process has stopped.

The app is ``tests/e2e/scaleout_app.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import ROOT, Served, free_port, server_env, wait_for_port
from tests.layers.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

APP = "tests.e2e.scaleout_app"
JOBS = "scaleout.jobs"
#: Upper bound for any one wait below; the whole test takes a few seconds.
WAIT = 15.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Return ``condition()``'s first truthy value; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- processes ---------------------------------------------------------------------------


class Processes:
    """Every process a test starts; stopped by PID (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.started: list[Served] = []

    def start(self, name: str, command: list[str], port: int = 0) -> Served:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        served = Served(proc, port, log_path)
        self.started.append(served)
        return served

    def stop_all(self) -> None:
        for served in reversed(self.started):
            served.stop(timeout=10)


def layer_args(urls: list[str]) -> list[str]:
    return [arg for url in urls for arg in ("--layer", url)]


def start_worker(procs: Processes, urls: list[str]) -> Served:
    return procs.start(
        "worker",
        [
            sys.executable,
            "-m",
            "wsbridge",
            "worker",
            *layer_args(urls),
            "--routing",
            f"{APP}:router",
            "--concurrency",
            "4",
            "--log-level",
            "info",
        ],
    )


def start_serve(procs: Processes, urls: list[str], index: int) -> Served:
    port = free_port()
    return procs.start(
        f"serve{index}",
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            APP,
            "--port",
            str(port),
            *layer_args(urls),
            "--no-worker",
            "--log-level",
            "info",
        ],
        port,
    )


def wait_ready(worker: Served, servers: list[Served]) -> None:
    """Wait (bounded) until the worker says it is ready and every server listens."""

    def worker_ready() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"wsbridge worker exited:\n{worker.log()}")
        return " ready: channels " in worker.log()

    wait_until(worker_ready, "wsbridge worker to be ready")
    for server in servers:
        try:
            wait_for_port(server.port, timeout=WAIT, proc=server.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n{server.log()}") from None


# -- clients -----------------------------------------------------------------------------


class Client:
    """One WebSocket client in a room; keeps every JSON frame it received."""

    def __init__(self, port: int, room: str) -> None:
        self.room = room
        self._stack = contextlib.ExitStack()
        url = f"ws://127.0.0.1:{port}/ws/room/{room}/"
        self.ws = self._stack.enter_context(connect(url, open_timeout=WAIT))
        self.frames: list[dict[str, Any]] = []
        try:
            hello = self.wait(lambda frames: frames and "hello" in frames[0], "the hello")
        except BaseException:
            self.close()
            raise
        self.pid: int = hello[0]["hello"]

    def wait(
        self, condition: Callable[[list[dict[str, Any]]], Any], what: str, timeout: float = WAIT
    ) -> list[dict[str, Any]]:
        """Read frames until ``condition(frames)`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(self.frames):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"client on pid {getattr(self, 'pid', '?')} in "
                    f"{self.room}: no {what} after {timeout} s: {self.frames}"
                )
            try:
                self.frames.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                continue
        return self.frames

    def texts(self) -> list[tuple[str, Any]]:
        return [(f["text"], f["via"]) for f in self.frames if "text" in f]

    def done(self) -> dict[str, int]:
        return {f["done"]: f["pid"] for f in self.frames if "done" in f}

    def close(self) -> None:
        self._stack.close()


def connect_spread(
    ports: list[int], room: str, processes: int, per_process: int = 2, limit: int = 96
) -> list[Client]:
    """Connect clients to ``room`` until ``processes`` different pids each hold ``per_process``.

    With one port per process this is round-robin; behind one gunicorn port
    the kernel picks the worker, so clients are opened in concurrent batches
    (at most ``limit`` in all). Every client stays connected: all are members.
    """
    clients: list[Client] = []
    deadline = time.monotonic() + WAIT

    def spread_enough() -> bool:
        counts: dict[int, int] = {}
        for client in clients:
            counts[client.pid] = counts.get(client.pid, 0) + 1
        return len([n for n in counts.values() if n >= per_process]) >= processes

    with ThreadPoolExecutor(8) as pool:
        while not spread_enough():
            assert len(clients) < limit and time.monotonic() < deadline, (
                f"{room}: clients landed on {sorted({c.pid for c in clients})} only"
            )
            batch = [ports[(len(clients) + i) % len(ports)] for i in range(max(len(ports), 4))]
            clients += pool.map(lambda port: Client(port, room), batch)
    return clients


def serving_pids(port: int, count: int) -> set[int]:
    """Plain HTTP requests (8 at a time, new connections) until ``count`` pids have answered.

    gunicorn's port accepts before every worker has imported the app (on a
    busy machine a worker can take seconds to boot); this waits until
    ``count`` workers serve, so that WebSockets can land on each.
    """

    def ask(_: int) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=WAIT) as answer:
            return int(answer.read())

    pids: set[int] = set()
    with ThreadPoolExecutor(8) as pool:

        def more() -> bool:
            pids.update(pool.map(ask, range(8)))
            return len(pids) >= count

        started = time.monotonic()
        try:
            wait_until(more, f"{count} gunicorn workers to answer", timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; only pids {sorted(pids)} answered") from None
    print(f"gunicorn: workers {sorted(pids)} answer after {time.monotonic() - started:.2f} s")
    return pids


def pick(clients: list[Client], per_process: int = 2) -> list[Client]:
    """``per_process`` clients of each pid (the ones that send)."""
    chosen: list[Client] = []
    for pid in sorted({c.pid for c in clients}):
        chosen += [c for c in clients if c.pid == pid][:per_process]
    return chosen


# -- the scenario ------------------------------------------------------------------------


@pytest.fixture
def shards(tmp_path: Path) -> Iterator[tuple[list[str], Any]]:
    """Two ``redis-server`` shards; yields (layer URLs, a RedisLayer on both for the test)."""
    from wsbridge.layers.redis import RedisLayer

    servers = [RedisServer(tmp_path / f"redis{i}") for i in range(2)]
    try:
        for server in servers:
            server.start()
        prefix = "scaleout" + secrets.token_hex(4)
        urls = [f"{servers[0].url}?prefix={prefix}", servers[1].url]
        layer = RedisLayer(hosts=[s.url for s in servers], prefix=prefix)
        try:
            yield urls, layer
        finally:
            layer.close()
    finally:
        for server in servers:
            server.stop()


def rooms_on_each_shard(layer: Any) -> list[str]:
    """One room (group) name owned by shard 0 and one by shard 1."""
    rooms: dict[int, str] = {}
    for i in range(1000):
        rooms.setdefault(layer.layout.group_shard(f"room{i}").index, f"room{i}")
        if len(rooms) == 2:
            return [rooms[0], rooms[1]]
    raise AssertionError("no room name hashes to each shard")


def broadcast_everywhere(
    senders: dict[str, dict[int, Client]], urls: list[str], env: dict[str, str]
) -> dict[str, set[str]]:
    """From a consumer in each serving process and from a plain process; returns texts per room.

    ``senders`` maps each room to one client per serving process (by pid).
    """
    expected: dict[str, set[str]] = {}
    for room, by_pid in senders.items():
        texts = expected.setdefault(room, set())
        for pid, sender in sorted(by_pid.items()):
            text = f"{room} via consumer in {pid}"
            sender.ws.send(json.dumps({"broadcast": text}))
            texts.add(text)
        text = f"{room} via a plain process"
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests/e2e/scaleout_app.py"), "group", room, text, *urls],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        print(done.stdout.strip())
        texts.add(text)
    return expected


def run_scenario(
    ports: list[int], urls: list[str], layer: Any, out: Path, env: dict[str, str]
) -> tuple[list[Client], dict[str, str]]:
    """Rooms on both shards, clients spread over both processes; broadcasts and jobs.

    Returns the clients (still connected) and the jobs sent, id -> sender pid.
    """
    rooms = rooms_on_each_shard(layer)
    clients = [c for room in rooms for c in connect_spread(ports, room, processes=2)]
    serving_pids = sorted({c.pid for c in clients})
    assert len(serving_pids) == 2, serving_pids
    stats = layer.stats()
    for index, room in enumerate(rooms):  # each room's membership lives on its own shard
        members = sum(1 for c in clients if c.room == room)
        assert stats["shards"][index]["groups"].get(room) == members, stats["shards"]
        assert room not in stats["shards"][1 - index]["groups"]

    senders = {
        room: {c.pid: c for c in pick([c for c in clients if c.room == room], 1)} for room in rooms
    }
    expected = broadcast_everywhere(senders, urls, env)
    for client in clients:
        want = expected[client.room]
        client.wait(
            lambda frames, want=want: want <= {f.get("text") for f in frames},
            f"all {len(want)} broadcasts",
        )
    print(
        f"broadcast: {len(clients)} clients on pids {serving_pids}, rooms {rooms}: "
        f"each got its room's {len(expected[rooms[0]])} broadcasts"
    )

    jobs: dict[str, str] = {}
    for room in rooms:
        for n, client in enumerate(pick([c for c in clients if c.room == room], 2)):
            for k in range(2):
                job = f"{room}-c{n}-j{k}"
                client.ws.send(json.dumps({"job": job}))
                jobs[job] = str(client.pid)
    for client in clients:  # the worker tells the room when each of its jobs ran
        want = {j for j in jobs if j.startswith(client.room + "-")}
        client.wait(
            lambda frames, want=want: want <= {f.get("done") for f in frames},
            f"the {len(want)} done notices",
        )
    wait_until(lambda: len(out.read_text().splitlines()) >= len(jobs), "the job lines")
    return clients, jobs


def check_after_stop(
    clients: list[Client], jobs: dict[str, str], out: Path, worker: Served
) -> None:
    """Read the job file once every process has stopped: each job once, in the worker."""
    lines = [line.split() for line in out.read_text().splitlines()]
    ran = [line[0] for line in lines]
    assert sorted(ran) == sorted(jobs), f"ran {sorted(ran)}, sent {sorted(jobs)}"  # once each
    assert {line[1] for line in lines} == {str(worker.pid)}, lines  # in the worker only
    assert {line[0]: line[2] for line in lines} == jobs  # from the process that queued it
    assert len(set(jobs.values())) == 2  # jobs came from both serving processes
    for client in clients:  # nothing crossed rooms; done notices came from the worker
        assert all(text.startswith(client.room + " ") for text, _ in client.texts())
        assert set(client.done().values()) == {worker.pid}
    print(
        f"background: {len(jobs)} jobs from pids {sorted(set(jobs.values()))} ran once each, "
        f"all in worker pid {worker.pid}"
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    out = tmp_path / "jobs.txt"
    out.touch()
    procs = Processes(tmp_path, server_env(SCALEOUT_OUT=str(out)))
    try:
        yield procs
    finally:
        procs.stop_all()


def stop_clean(served: Served) -> None:
    status = served.stop(timeout=WAIT)
    assert status == 0, f"exit status {status}\n{served.log()}"


def test_two_serve_processes_one_worker_two_shards(shards, processes, tmp_path):
    urls, layer = shards
    out = tmp_path / "jobs.txt"
    worker = start_worker(processes, urls)
    servers = [start_serve(processes, urls, i) for i in range(2)]
    wait_ready(worker, servers)

    clients, jobs = run_scenario([s.port for s in servers], urls, layer, out, processes.env)
    assert {c.pid for c in clients} == {s.pid for s in servers}
    for client in clients:
        client.close()
    for served in (worker, *servers):
        stop_clean(served)
    check_after_stop(clients, jobs, out, worker)
    assert set(jobs.values()) == {str(s.pid) for s in servers}
    for server in servers:  # --no-worker: no background channel ran in a serving process
        assert "worker running" not in server.log(), server.log()
    assert f"running 1 background channel(s): {JOBS}" in worker.log()


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("preload", [False, True], ids=["imported-in-workers", "preload"])
def test_gunicorn_gevent_two_workers_one_worker_two_shards(shards, processes, tmp_path, preload):
    urls, layer = shards
    out = tmp_path / "jobs.txt"
    port = free_port()
    # gunicorn has no --layer: the app sets the layer from SCALEOUT_LAYER when
    # it is imported, as a settings module would: in each worker, or once in
    # the master with --preload (then each forked worker must take its own
    # identity, or the two would read one inbox and lose messages).
    processes.env["SCALEOUT_LAYER"] = " ".join(urls)
    worker = start_worker(processes, urls)
    master = processes.start(
        "gunicorn",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            *(["--preload"] if preload else []),
            f"{APP}:application",
        ],
        port,
    )
    wait_ready(worker, [master])
    workers = serving_pids(port, 2)

    clients, jobs = run_scenario([port], urls, layer, out, processes.env)
    serving = {c.pid for c in clients}
    assert serving == workers and master.pid not in serving
    assert {_parent_pid(pid) for pid in serving} == {master.pid}  # gunicorn's two workers
    for client in clients:
        client.close()
    stop_clean(worker)
    master.proc.send_signal(signal.SIGTERM)
    assert master.proc.wait(WAIT) == 0, master.log()
    check_after_stop(clients, jobs, out, worker)
    assert set(jobs.values()) == {str(pid) for pid in serving}
    assert os.getpid() not in serving


def test_repeated_layer_options_are_one_shard_each_with_the_options_of_any():
    from wsbridge.exceptions import ConfigurationError
    from wsbridge.worker import layer_from_option

    layer = layer_from_option(
        ["redis://127.0.0.1:7001/0?prefix=site&capacity=7", "redis://127.0.0.1:7002/0"]
    )
    try:  # nothing connects until the layer is used
        assert [s.name for s in layer.shards] == [
            "redis://127.0.0.1:7001/0",
            "redis://127.0.0.1:7002/0",
        ]
        assert layer.prefix == "site" and layer.capacity == 7
    finally:
        layer.close()
    with pytest.raises(ConfigurationError, match="each one must be a redis://"):
        layer_from_option(["redis://127.0.0.1:7001/0", "memory"])
