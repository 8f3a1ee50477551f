"""Processes the bench starts: pinned to a core, watched through /proc, stopped by PID.

Everything here works on the PIDs the bench itself started (and their
children, e.g. gunicorn's workers): nothing is ever looked up or stopped by
name.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"

#: server processes run on this core, the load client / Redis / publishers on the other.
SERVER_CORE = "0"
CLIENT_CORE = "1"


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by every child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cores() -> int:
    return os.cpu_count() or 1


def pinned(cmd: Sequence[str], core: str) -> list[str]:
    """``cmd`` under ``taskset -c core`` (taskset execs, so the PID stays the command's)."""
    if cores() < 2:
        return list(cmd)
    return ["taskset", "-c", core, *cmd]


def free_port() -> int:
    """A port free on 127.0.0.1 right now (bind to 0, read it, close)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:port accepts a TCP connection; raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


# ---------------------------------------------------------------- /proc --


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's children list)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            except OSError:
                continue
            out.extend(int(x) for x in text.split())
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that exist now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
            todo.extend(children(p))
    return out


def rss_kb(pid: int) -> int:
    """VmRSS of one process in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pids: Sequence[int]) -> dict[str, Any]:
    """VmRSS summed over the trees of ``pids``, with the per-process figures."""
    per = {p: rss_kb(p) for root in pids for p in tree(root)}
    return {"total_kb": sum(per.values()), "per_pid_kb": {str(k): v for k, v in per.items()}}


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuMeter:
    """CPU time over wall time of process trees, between start() and stop()."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    def _sample(self) -> dict[int, float]:
        return {p: cpu_seconds(p) for root in self.pids for p in tree(root)}

    def start(self) -> CpuMeter:
        self._start = self._sample()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        end = self._sample()
        wall = time.monotonic() - self._t0
        cpu = sum(v - self._start.get(p, 0.0) for p, v in end.items())
        return {
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "cpu_ratio": round(cpu / wall, 3) if wall else 0,
        }


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine (all cores) since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests (all cores) since boot, /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return int(fields[7]) / CLK_TCK if len(fields) > 7 else 0.0


class MachineMeter:
    """Busy cores of the whole machine between start() and stop(): what else ran too.

    Other work on the machine (another test suite, a build) takes CPU from
    the server and the client; a run whose ``others_cores`` is well above 0
    was disturbed and its figures are less comparable.
    """

    def __init__(self, ours: Sequence[int]) -> None:
        self.ours = CpuMeter(ours)
        self._busy0 = 0.0
        self._t0 = 0.0

    def start(self) -> MachineMeter:
        self.ours.start()
        self._busy0 = machine_busy_seconds()
        self._steal0 = machine_steal_seconds()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        ours = self.ours.stop()
        busy = machine_busy_seconds() - self._busy0
        steal = machine_steal_seconds() - self._steal0
        wall = time.monotonic() - self._t0
        return {
            # cores' worth of time the VM's hypervisor ran someone else (steal, /proc/stat)
            "steal_cores": round(steal / wall, 3) if wall else 0,
            "busy_cores": round(busy / wall, 3) if wall else 0,
            "ours_cores": ours["cpu_ratio"],
            "others_cores": round(max(0.0, busy - ours["cpu_s"]) / wall, 3) if wall else 0,
        }


def wait_for_quiet(max_wait: float, threshold: float = 0.3, window: float = 2.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine is busy less than ``threshold`` cores.

    Other people's test suites share this machine; starting a measurement
    in a quiet moment keeps the figures comparable. Returns the busy cores
    measured last (the bench has nothing running at this point).
    """
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(window)
        busy = (machine_busy_seconds() - before) / window
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 3)


# ------------------------------------------------------------ processes --


class Proc:
    """A process the bench started, its output logged to a file, stopped by PID."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        core: str | None = None,
        stdin: bool = False,
        stdout_lines: bool = False,
    ) -> None:
        self.name = name
        full = pinned(cmd, core) if core is not None else list(cmd)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(full)}\n".encode())
        self._log.flush()
        merged_env = dict(os.environ)
        merged_env.update(env or {})
        self.popen = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_lines else self._log,
            stderr=self._log,
            env=merged_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,  # its own process group: signals reach its workers only
        )
        self.pid = self.popen.pid
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        if stdout_lines:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self._log.write(b"> " + raw)
            self._log.flush()
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next JSON line whose "event" is ``event`` (an "error" line raises)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.name}: no {event!r} within {timeout}s (log {self.log_path})"
                )
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                code = self.popen.poll()
                raise RuntimeError(
                    f"{self.name} exited ({code}) before {event!r}; log {self.log_path}"
                )
            if item.get("event") == "error":
                raise RuntimeError(f"{self.name}: {item.get('error')}")
            if item.get("event") == event:
                return item

    def tell(self, line: str) -> None:
        """Write one command line to the process's stdin."""
        if self.popen.stdin and self.popen.poll() is None:
            try:
                self.popen.stdin.write((line + "\n").encode())
                self.popen.stdin.flush()
            except BrokenPipeError:
                pass

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM this PID, then SIGKILL it and its descendants after ``grace``."""
        if self.popen.poll() is None:
            family = tree(self.pid)
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            for pid in family:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        self._log.close()


# ----------------------------------------------------------------- Redis --


def redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """Send one RESP command to 127.0.0.1:port; the raw reply (enough for PING/FLUSHALL/INFO)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(payload)
        data = s.recv(65536)
        if data.startswith(b"$"):
            size = int(data[1 : data.index(b"\r\n")])
            while len(data) < size + 5:
                more = s.recv(65536)
                if not more:
                    break
                data += more
        return data


class RedisServer:
    """A redis-server of the bench's own on a free loopback port (not the tests' 6379)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        workdir = log_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(
            "redis",
            [
                "redis-server",
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--maxclients",
                "20000",
            ],
            log_dir=log_dir,
            core=CLIENT_CORE,
        )
        wait_port(self.port, 10, self.proc.popen)
        self.url = f"redis://{LOOPBACK}:{self.port}/0"

    def flush(self) -> None:
        redis_command(self.port, "FLUSHALL")

    def version(self) -> str:
        info = redis_command(self.port, "INFO", "server").decode(errors="replace")
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop(self) -> None:
        self.proc.stop()
