"""Soak and fault run: mixed traffic over 2 servers, a worker and a Redis Cluster, with kills.

``make soak`` runs it for 30 minutes (``python -m tests.e2e.soak --duration
1800``); ``tests/e2e/test_soak.py`` runs a short version in ``make test``.
Every process is real and started here on loopback ports, stopped by PID:

* a Redis Cluster of 3 masters + 3 replicas (``tests/layers/redis_cluster.py``);
* two ``wsbridge serve tests.e2e.scaleout_app --no-worker`` processes and one
  ``wsbridge worker --at-least-once scaleout.jobs``, all on the cluster;
* WebSocket clients in one room, spread over both servers; a client whose
  server dies reconnects to a live one (backoff 0.1 s doubling to 2 s);
* the driver (this process) sends to the room (``group_send``, at-most-once)
  and queues background jobs (at-least-once) through its own layer.

On a schedule (at 1/4, 1/2 and 3/4 of the run) it SIGKILLs the master
serving the room's slot (restarted once a replica took over), one server
(restarted after 2 s) and the worker (restarted at once). The report gives,
per guarantee class, delivered/expected; per process, the RSS and FD slopes
(least squares over samples every 2 s, from 20 s after each process
started: a restarted process starts a new series); and each recovery time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from tests.conftest import ROOT, free_port, server_env, wait_for_port
from tests.layers.redis_cluster import LocalCluster

APP = "tests.e2e.scaleout_app"
JOBS = "scaleout.jobs"
ROOM = "soakroom"
VISIBILITY = 3.0
#: The processes' lease: a killed server's memberships go within ~1.5 * LEASE.
LEASE = 5.0
#: Seconds of a process's life left out of its RSS/FD slopes.
WARM_UP = 20.0


@dataclass
class Proc:
    """One child process (restartable), its log and resource samples."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def start(self) -> None:
        with open(self.log_dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.samples = []  # slopes are per process lifetime (a restart is a new process)
        if self.port:
            wait_for_port(self.port, timeout=30, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def sample(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self.proc.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
            )
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return
        self.samples.append((time.monotonic(), rss, fds))


def slope_per_minute(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, value), per minute; 0 for fewer than 3 points."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


class Client(threading.Thread):
    """A WebSocket client of the room that reconnects to any live server when dropped."""

    def __init__(self, ports: list[int], first: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.ports, self.index, self.stop = ports, first, stop
        self.received: set[int] = set()
        self.intervals: list[list[float]] = []  # [joined, left] monotonic times
        self.reconnects: list[float] = []  # seconds from drop to rejoined
        self.port = 0
        self.channel = ""  # the layer channel of the current connection

    def run(self) -> None:
        dropped_at: float | None = None
        pause = 0.1
        while not self.stop.is_set():
            port = self.ports[self.index % len(self.ports)]
            try:
                with connect(f"ws://127.0.0.1:{port}/ws/room/{ROOM}/", open_timeout=5) as ws:
                    hello = json.loads(ws.recv(timeout=5))
                    assert "hello" in hello
                    self.port, self.channel = port, hello["channel"]
                    self.intervals.append([time.monotonic(), float("inf")])
                    if dropped_at is not None:
                        self.reconnects.append(time.monotonic() - dropped_at)
                        dropped_at = None
                    pause = 0.1
                    self._read(ws)
            except Exception:  # refused, reset, timeout: try the next server
                pass
            if self.intervals and self.intervals[-1][1] == float("inf"):
                self.intervals[-1][1] = time.monotonic()
            if dropped_at is None and not self.stop.is_set():
                dropped_at = time.monotonic()
            self.index += 1
            self.stop.wait(pause)
            pause = min(2.0, pause * 2)

    def _read(self, ws: Any) -> None:
        while not self.stop.is_set():
            try:
                frame = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            if "text" in frame:
                self.received.add(int(frame["text"]))

    def connected_at(self, when: float, margin: float = 0.5) -> bool:
        """Connected over [when - margin, when + margin]: counts as an expected receiver."""
        return any(a <= when - margin and b >= when + margin for a, b in self.intervals)


@dataclass
class Report:
    duration: float
    group_sent: int = 0
    group_refused: int = 0
    group_expected: int = 0
    group_delivered: int = 0
    jobs_queued: int = 0
    jobs_refused: int = 0
    jobs_done: int = 0
    jobs_duplicated: int = 0
    recoveries: dict[str, float] = field(default_factory=dict)
    slopes: dict[str, dict[str, float]] = field(default_factory=dict)
    reconnects: list[float] = field(default_factory=list)
    stale_members: int = 0

    def lines(self) -> list[str]:
        out = [
            f"soak: {self.duration:.0f} s",
            f"  group_send (at-most-once, WebSocket): delivered {self.group_delivered}/"
            f"{self.group_expected} to clients connected at send time "
            f"({self.group_sent} sent, {self.group_refused} refused with LayerUnavailable)",
            f"  background jobs (at-least-once): done {self.jobs_done}/{self.jobs_queued} "
            f"queued, {self.jobs_duplicated} ran twice, {self.jobs_refused} refused at send",
        ]
        out.append(f"  group members left by dead processes at the end: {self.stale_members}")
        for name, seconds in self.recoveries.items():
            out.append(f"  recovery after {name}: {seconds:.2f} s")
        if self.reconnects:
            out.append(
                f"  client reconnects: {len(self.reconnects)}, slowest {max(self.reconnects):.2f} s"
            )
        for name, slope in self.slopes.items():
            out.append(
                f"  {name}: RSS {slope['rss_kb_per_min']:+.0f} KiB/min, "
                f"FDs {slope['fds_per_min']:+.2f}/min over {slope['minutes']:.1f} min"
            )
        return out


def run(duration: float, workdir: Path, clients_count: int = 8) -> Report:
    """Run the soak for ``duration`` seconds; return the report (raises on set-up failure)."""
    from wsbridge import Channel
    from wsbridge.exceptions import LayerUnavailable
    from wsbridge.layers.redis import RedisLayer

    cluster = LocalCluster(workdir / "cluster")
    procs: list[Proc] = []
    stop = threading.Event()
    clients: list[Client] = []
    layer = None
    try:
        cluster.start()
        prefix = "soak" + secrets.token_hex(4)
        first, *rest = cluster.urls
        layer_args = ["--layer", f"{first}?cluster=1&prefix={prefix}&lease={LEASE}"]
        for url in rest:
            layer_args += ["--layer", url]
        out = workdir / "jobs.txt"
        out.touch()
        env = server_env(SCALEOUT_OUT=str(out))
        for i in range(2):
            port = free_port()
            procs.append(
                Proc(
                    f"serve{i}",
                    [
                        sys.executable,
                        "-m",
                        "wsbridge",
                        "serve",
                        APP,
                        "--port",
                        str(port),
                        *layer_args,
                        "--no-worker",
                        "--log-level",
                        "warning",
                    ],
                    env,
                    workdir,
                    port,
                )
            )
        procs.append(
            Proc(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "wsbridge",
                    "worker",
                    *layer_args,
                    "--routing",
                    f"{APP}:router",
                    "--at-least-once",
                    JOBS,
                    "--visibility-timeout",
                    str(VISIBILITY),
                    "--log-level",
                    "warning",
                ],
                env,
                workdir,
            )
        )
        for proc in procs:
            proc.start()
        layer = RedisLayer(hosts=cluster.urls, cluster=True, prefix=prefix, lease=LEASE)
        ports = [p.port for p in procs[:2]]
        clients = [Client(ports, i, stop) for i in range(clients_count)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 15
        while sum(1 for c in clients if c.intervals) < clients_count:
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not connect")
            time.sleep(0.05)
        time.sleep(0.5)
        return _traffic(duration, cluster, procs, clients, layer, out, Channel, LayerUnavailable)
    finally:
        stop.set()
        for client in clients:
            client.join(5)
        if layer is not None:
            with contextlib.suppress(Exception):
                layer.flush()
            layer.close()
        for proc in procs:
            proc.stop()
        cluster.stop()


def _traffic(duration, cluster, procs, clients, layer, out, Channel, LayerUnavailable) -> Report:
    from redis.cluster import key_slot

    report = Report(duration)
    sent_at: dict[int, float] = {}
    jobs: set[int] = set()
    started = time.monotonic()
    schedule = [(0.25, "redis master"), (0.5, "server process"), (0.75, "worker")]
    next_sample = started
    seq = job = 0
    pending_recovery: dict[str, float] = {}
    dead: set[str] = set()
    slot = key_slot(layer.layout.group_key(ROOM).encode())
    while time.monotonic() - started < duration:
        now = time.monotonic()
        if schedule and now - started >= schedule[0][0] * duration:
            _, fault = schedule.pop(0)
            pending_recovery[fault] = now
            if fault == "server process":
                pending_recovery["memberships"] = now
                dead = {c.channel for c in clients if c.port == procs[0].port}
            _inject(fault, cluster, procs, slot)
        if now >= next_sample:
            for proc in procs:
                proc.sample()
            next_sample = now + 2
        try:
            layer.group_send(ROOM, {"type": "room.message", "text": str(seq), "via": "soak"})
            sent_at[seq] = time.monotonic()
            if "redis master" in pending_recovery:
                report.recoveries["redis master kill (first accepted send)"] = (
                    time.monotonic() - pending_recovery.pop("redis master")
                )
        except LayerUnavailable:
            report.group_refused += 1
        seq += 1
        if seq % 4 == 0:
            try:
                Channel(JOBS, channel_layer=layer).send(
                    {"id": job, "room": "soak-jobs", "from": os.getpid()}
                )
                jobs.add(job)
            except LayerUnavailable:
                report.jobs_refused += 1
            job += 1
        _check_recoveries(pending_recovery, report, clients, procs, out)
        if "memberships" in pending_recovery and seq % 10 == 0:
            with contextlib.suppress(LayerUnavailable):
                if not dead & set(layer.group_channels(ROOM)):
                    report.recoveries["server kill (its memberships reaped)"] = (
                        time.monotonic() - pending_recovery.pop("memberships")
                    )
        time.sleep(0.05)
    # Let the last messages and redelivered jobs arrive.
    settle = time.monotonic() + VISIBILITY + 10
    while time.monotonic() < settle and len(_done(out)[0]) < len(jobs):
        _check_recoveries(pending_recovery, report, clients, procs, out)
        time.sleep(0.2)
    time.sleep(1)
    live = {c.channel for c in clients if c.intervals and c.intervals[-1][1] == float("inf")}
    report.stale_members = len(set(layer.group_channels(ROOM)) - live)
    report.group_sent = len(sent_at)
    for seq_no, when in sent_at.items():
        for client in clients:
            if client.connected_at(when):
                report.group_expected += 1
                report.group_delivered += seq_no in client.received
    done, duplicated = _done(out)
    report.jobs_queued, report.jobs_done = len(jobs), len(done & jobs)
    report.jobs_duplicated = duplicated
    report.reconnects = [r for c in clients for r in c.reconnects]
    for proc in procs:
        # The first WARM_UP seconds of a process (imports, pools filling) are no leak.
        steady = [s for s in proc.samples if s[0] - proc.samples[0][0] >= WARM_UP]
        if len(steady) >= 3:
            report.slopes[proc.name] = {
                "rss_kb_per_min": slope_per_minute([(t, r) for t, r, _ in steady]),
                "fds_per_min": slope_per_minute([(t, f) for t, _, f in steady]),
                "minutes": (steady[-1][0] - steady[0][0]) / 60,
            }
    return report


def _inject(fault: str, cluster, procs, slot: int) -> None:
    if fault == "redis master":
        master = cluster.slot_owner(slot)
        cluster.kill(master)
        threading.Thread(target=_restart_node, args=(cluster, master, slot), daemon=True).start()
    elif fault == "server process":
        procs[0].kill()
        threading.Thread(target=_restart_later, args=(procs[0], 2.0), daemon=True).start()
    else:
        procs[2].kill()
        procs[2].start()


def _restart_node(cluster, node, slot: int) -> None:
    cluster.wait_promoted(slot, node)
    cluster.restart(node)


def _restart_later(proc: Proc, delay: float) -> None:
    time.sleep(delay)
    proc.start()


def _check_recoveries(pending, report, clients, procs, out) -> None:
    now = time.monotonic()
    if "server process" in pending:
        if all(c.intervals and c.intervals[-1][1] == float("inf") for c in clients):
            report.recoveries["server kill (every client connected again)"] = now - pending.pop(
                "server process"
            )
    if "worker" in pending:
        lines = out.read_text().splitlines()
        if lines and procs[2].proc is not None and lines[-1].split()[1] == str(procs[2].proc.pid):
            report.recoveries["worker kill (first job done by the new worker)"] = now - pending.pop(
                "worker"
            )


def _done(out: Path) -> tuple[set[int], int]:
    ids = [int(line.split()[0]) for line in out.read_text().splitlines() if line.strip()]
    return set(ids), len(ids) - len(set(ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wsbridge-soak-") as tmp:
        report = run(args.duration, Path(tmp), args.clients)
    print("\n".join(report.lines()))
    print(json.dumps(report.__dict__, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
