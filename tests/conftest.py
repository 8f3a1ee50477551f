"""Fixtures shared by every test directory: real servers on free loopback ports.

* ``wsbridge_serve``: a factory that starts ``python -m wsbridge serve APP``
  as a subprocess on a free port and waits until it accepts connections::

      def test_echo(wsbridge_serve):
          server = wsbridge_serve("examples.echo_app")
          with connect(server.ws_url("/echo/")) as ws: ...

  Every server it started is stopped (SIGTERM, then SIGKILL) at teardown;
  ``server.log()`` returns what it printed. For a server shared by a whole
  module, call :func:`start_wsbridge_serve` from a module-scoped fixture.
* ``gevent_server``: a factory that serves a WSGI app on wsbridge's pywsgi
  server *inside* the (monkey-patched) test process, in a greenlet.

Both bind 127.0.0.1 with port 0 semantics, so parallel runs never collide.
"""

from __future__ import annotations

# The whole test process runs monkey-patched, like every wsbridge server:
# patched first, before Django, redis-py or any test module is imported, so
# thread-locals, sockets and locks are the same kind everywhere. Tests that
# need an *unpatched* process run one in a subprocess.
from gevent import monkey

monkey.patch_all()

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:``port`` accepts a connection (or ``proc`` dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a server subprocess: the repository on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Served:
    """A server subprocess: its process, port and log file."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_process(
    command: list[str], log_path: Path, port: int, *, env: dict[str, str] | None = None
) -> Served:
    """Start ``command`` (which must listen on ``port``) and wait until it does."""
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env or server_env(), stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    served = Served(proc, port, log_path)
    try:
        wait_for_port(port, proc=proc)
    except Exception as exc:
        served.stop(2)
        raise RuntimeError(f"{' '.join(command)} did not start: {exc}\n{served.log()}") from None
    return served


def start_wsbridge_serve(
    app: str, log_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Served:
    """Run ``python -m wsbridge serve APP --port <free> ARGS`` and wait until it listens."""
    port = free_port()
    command = [sys.executable, "-m", "wsbridge", "serve", app, "--port", str(port), *args]
    name = app.replace(":", "_").replace(".", "_")
    return start_process(command, log_dir / f"serve-{name}-{port}.log", port, env=env)


@pytest.fixture
def wsbridge_serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Factory: ``wsbridge_serve("module:app", *extra_args) -> Served``; stopped at teardown."""
    started: list[Served] = []

    def start(app: str, *args: str, env: dict[str, str] | None = None) -> Served:
        served = start_wsbridge_serve(app, tmp_path, *args, env=env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def sockets_on_two_workers(open_socket: Callable[[], Any], stack: Any, attempts: int = 4) -> dict:
    """One WebSocket on each of two server workers: ``{pid: socket}``.

    ``open_socket()`` opens a connection whose consumer first sends
    ``{"pid": ...}`` and, told ``{"hog": s}``, answers ``{"hogging": s}``, keeps
    its worker busy for ``s`` seconds without yielding, then answers
    ``{"hogged": s}``. While the first socket's worker is busy only the other
    worker can accept the second. A second worker still booting (a loaded
    machine) accepts nothing yet and the first answers once free: then the
    sockets share a worker, and it tries again, up to ``attempts`` times.
    """
    import json

    first = stack.enter_context(open_socket())
    first_pid = json.loads(first.recv(timeout=10))["pid"]
    for _attempt in range(attempts):
        first.send(json.dumps({"hog": 1.5}))
        assert json.loads(first.recv(timeout=10)) == {"hogging": 1.5}  # its worker is busy now
        second = open_socket()
        second_pid = json.loads(second.recv(timeout=10))["pid"]
        assert json.loads(first.recv(timeout=10)) == {"hogged": 1.5}
        if second_pid != first_pid:
            stack.enter_context(second)
            return {first_pid: first, second_pid: second}
        second.close()
    raise AssertionError(f"{attempts} times both sockets landed on one worker ({first_pid})")


@dataclass
class InProcessServer:
    """A pywsgi server running in a thread of the test process."""

    port: int
    thread: threading.Thread
    stop_flag: threading.Event

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)


def _serve_in_thread(
    app: Any, ready: list[Any], stop_flag: threading.Event, started: threading.Event
) -> None:
    import gevent

    from wsbridge.transport.server import make_server

    try:
        server = make_server(app, "127.0.0.1", 0)
        server.start()
        ready.append(server.server_port)
    except Exception as exc:  # reported to the test by the factory
        ready.append(exc)
        started.set()
        return
    started.set()
    while not stop_flag.is_set():
        gevent.sleep(0.02)
    server.stop(timeout=1)


@pytest.fixture
def gevent_server() -> Iterator[Callable[[Any], InProcessServer]]:
    """Factory: ``gevent_server(wsgi_app) -> InProcessServer`` (own hub, own thread)."""
    servers: list[InProcessServer] = []

    def start(app: Any) -> InProcessServer:
        ready: list[Any] = []
        stop_flag, started = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=_serve_in_thread, args=(app, ready, stop_flag, started), daemon=True
        )
        thread.start()
        if not started.wait(10) or isinstance(ready[0], Exception):
            raise RuntimeError(f"in-process server did not start: {ready}")
        server = InProcessServer(ready[0], thread, stop_flag)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _process_layers_restored() -> Iterator[None]:
    """``wrap(app, layer=...)`` makes its layer the process's (as it must in a server):
    give the next test the layers this one started with."""
    from wsbridge import layers

    try:  # each test sees its own drops warned, whatever the rate limit did before
        from wsbridge.drops import reset_drop_counts

        reset_drop_counts()
    except ImportError:
        pass
    sources = getattr(layers, "_sources", {})
    saved = (dict(layers._layers), dict(sources))
    yield
    with layers._lock:
        layers._layers.clear()
        layers._layers.update(saved[0])
        sources.clear()
        sources.update(saved[1])
