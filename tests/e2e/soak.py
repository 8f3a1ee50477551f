"""Soak and fault run: mixed traffic over 2 servers, a worker and a Redis Cluster, with kills.

``make soak`` runs it for 30 minutes (``python -m tests.e2e.soak --duration
1800``); ``tests/e2e/test_soak.py`` runs a short version in ``make test``.
Every process is real and started here on loopback ports, stopped by PID:

* a Redis Cluster of 3 masters + 3 replicas (``tests/layers/redis_cluster.py``);
* two ``wsbridge serve tests.e2e.scaleout_app --no-worker`` processes and one
  ``wsbridge worker --at-least-once scaleout.jobs``, all on the cluster;
* clients of one room, spread over both servers, over three transports:
  WebSocket and SSE clients whose server dies reconnect to a live one
  (backoff 0.1 s doubling to 2 s); long-poll clients keep ONE session for
  the whole run: on 502/503/504 or a connection error they retry the same
  request (same token) against the other server, with the same backoff,
  so a session whose process was SIGKILLed is adopted by a survivor from
  its checkpoint once the dead process's lease ends (503 until then); only
  404/410 (or a close frame) makes them open a new one: "sessions lost";
* the driver (this process) sends to the room (``group_send``, at-most-once)
  and queues background jobs (at-least-once) through its own layer.

On a schedule (at 1/4, 1/2 and 3/4 of the run) it SIGKILLs the master
serving the room's slot (restarted once a replica took over), one server
(restarted after 2 s) and the worker (restarted at once). The report gives,
per guarantee class and transport, delivered/expected (expected: the clients
connected, or for long-poll holding a live session, at send time); for
long-poll, sessions lost and duplicates; per process, the RSS and FD slopes
(least squares over samples every 2 s, from 20 s after each process
started: a restarted process starts a new series); and each recovery time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
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
from wsbridge.protocol.envelope import decode_frame

APP = "tests.e2e.scaleout_app"
JOBS = "scaleout.jobs"
ROOM = "soakroom"
VISIBILITY = 3.0
#: The processes' lease: a killed server's memberships go within ~1.5 * LEASE.
LEASE = 5.0
#: Seconds of a process's life left out of its RSS/FD slopes.
WARM_UP = 20.0
#: Seconds after the last fault before the "after the last fault" slopes start.
CALM_AFTER = 60.0
#: Seconds per window when the report says at what send time the losses fell.
LOSS_WINDOW = 5
LONGPOLL = "/_wsbridge/lp"
#: A long-poll is held at most this long, so a client notices the end of the run.
POLL_WAIT = 2.0
#: An SSE stream silent this long (the app sends a keep-alive every second) is dead.
SSE_SILENCE = 10.0


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
    #: Per sample, the accepted client connections among the FDs (clients move between
    #: servers at a kill: a step in the FD count that is no leak).
    client_fds: list[int] = field(default_factory=list)

    def start(self) -> None:
        with open(self.log_dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.samples = []  # slopes are per process lifetime (a restart is a new process)
        self.client_fds = []
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
            links = [_readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            clients = len(accepted_sockets(self.port) & set(links)) if self.port else 0
        except (OSError, StopIteration):
            return
        self.samples.append((time.monotonic(), rss, len(links)))
        self.client_fds.append(clients)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile: it still counts, as listdir saw it
        return ""


def accepted_sockets(port: int) -> set[str]:
    """``socket:[inode]`` of every TCP connection accepted on local ``port`` (not the listener)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":
                    found.add(f"socket:[{fields[9]}]")
    return found


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


class Member(threading.Thread):
    """A client of the room (a thread: a greenlet, the test process is monkey-patched)."""

    def __init__(self, ports: list[int], first: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.ports, self.index, self.stop = ports, first, stop
        self.received: set[int] = set()
        self.intervals: list[list[float]] = []  # [joined, left] monotonic times
        self.reconnects: list[float] = []  # seconds from drop to rejoined
        self.port = 0
        self.channel = ""  # the layer channel of the current connection (its group member)
        self.pid = 0  # the server process running its consumer (from the hello)

    @property
    def live(self) -> bool:
        return bool(self.intervals) and self.intervals[-1][1] == float("inf")

    def _join(self) -> None:
        self.intervals.append([time.monotonic(), float("inf")])

    def _leave(self) -> None:
        if self.live:
            self.intervals[-1][1] = time.monotonic()

    def connected_at(self, when: float, margin: float = 0.5) -> bool:
        """Connected over [when - margin, when + margin]: counts as an expected receiver."""
        return any(a <= when - margin and b >= when + margin for a, b in self.intervals)


class Client(Member):
    """A WebSocket client of the room that reconnects to any live server when dropped."""

    def run(self) -> None:
        dropped_at: float | None = None
        pause = 0.1
        while not self.stop.is_set():
            port = self.ports[self.index % len(self.ports)]
            try:
                with connect(f"ws://127.0.0.1:{port}/ws/room/{ROOM}/", open_timeout=5) as ws:
                    hello = json.loads(ws.recv(timeout=5))
                    assert "hello" in hello
                    self.port, self.channel, self.pid = port, hello["channel"], hello["hello"]
                    self._join()
                    if dropped_at is not None:
                        self.reconnects.append(time.monotonic() - dropped_at)
                        dropped_at = None
                    pause = 0.1
                    self._read(ws)
            except Exception:  # refused, reset, timeout: try the next server
                pass
            self._leave()
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


class SseClient(Member):
    """An SSE client of the room (``GET /sse/room/<room>/``); reconnects to the other server."""

    def run(self) -> None:
        self._dropped_at: float | None = None
        self._pause = 0.1
        while not self.stop.is_set():
            port = self.ports[self.index % len(self.ports)]
            try:
                self._stream(port)
            except (OSError, ValueError, KeyError):  # refused, reset, a bad answer
                pass
            self._leave()
            if self._dropped_at is None and not self.stop.is_set():
                self._dropped_at = time.monotonic()
            self.index += 1
            self.stop.wait(self._pause)
            self._pause = min(2.0, self._pause * 2)

    def _stream(self, port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            # HTTP/1.0: the stream is the rest of the connection (no chunked coding).
            request = f"GET /sse/room/{ROOM}/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
            sock.sendall(f"{request}Accept: text/event-stream\r\n\r\n".encode())
            sock.settimeout(0.5)
            for event, data in self._events(sock):
                if event == "hello":
                    hello = json.loads(data)
                    self.port, self.channel, self.pid = port, hello["channel"], hello["hello"]
                    self._join()
                    if self._dropped_at is not None:
                        self.reconnects.append(time.monotonic() - self._dropped_at)
                        self._dropped_at = None
                    self._pause = 0.1
                elif event == "message":
                    self.received.add(int(json.loads(data)["text"]))

    def _events(self, sock: socket.socket) -> Any:
        """(event, data) per event of the stream, until it ends, stays silent or the run stops."""
        buffer = b""
        header_done = False
        heard = time.monotonic()
        while not self.stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if time.monotonic() - heard > SSE_SILENCE:
                    return  # not even a keep-alive: the server is gone or stuck
                continue
            if not chunk:
                return
            heard = time.monotonic()
            buffer += chunk
            if not header_done:
                head, sep, rest = buffer.partition(b"\r\n\r\n")
                if not sep:
                    continue
                if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    raise ValueError(head.split(b"\r\n", 1)[0].decode("latin-1"))
                header_done, buffer = True, rest
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                event, data = "message", []
                for line in block.decode().split("\n"):
                    field_name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field_name == "event":
                        event = value
                    elif field_name == "data":
                        data.append(value)
                if data:
                    yield event, "\n".join(data)


class PollClient(Member):
    """A long-poll client of the room that keeps ONE session for the whole run.

    On 502/503/504 or a connection error it retries the same request (same
    token, same ack) against the other server, with backoff: a session whose
    server was killed is adopted by a survivor, which then answers with a
    new ``token``. Only 404/410, a close frame or another error make it open
    a new session (``lost``). Frames with a ``seq`` at or below the last
    one seen are dropped (``redelivered``).
    """

    def __init__(self, ports: list[int], first: int, stop: threading.Event) -> None:
        super().__init__(ports, first, stop)
        self.token: str | None = None
        self.seen = 0  # the highest server seq received in this session
        self.generation = 0  # sessions opened
        #: (when, why): 404/410 or a close frame, then a new session was opened.
        self.lost: list[tuple[float, str]] = []
        #: (when, why): any other answer (then a new session too).
        self.errors: list[tuple[float, str]] = []
        self.redelivered = 0  # frames dropped by seq (seen before)
        self.seq_duplicates = 0  # a seq kept twice (the dedupe failed): must be 0
        self.payload_duplicates = 0  # a room message kept twice: must be 0
        self.gaps = 0  # seqs skipped by the server (frames it lost)
        self.new_tokens = 0  # answers carrying a new token (adoptions)
        #: (time, generation, new token) of the first 200 after each failure.
        self.recovered: list[tuple[float, int, bool]] = []
        self._failed = False
        self._seqs: set[int] = set()  # the seqs kept in this session

    def run(self) -> None:
        pause = 0.1
        try:
            while not self.stop.is_set():
                port = self.ports[self.index % len(self.ports)]
                try:
                    ok = self._open(port) if self.token is None else self._poll(port)
                except (OSError, http.client.HTTPException):
                    ok = None  # refused, reset, timed out: the process is gone
                if ok is None:  # transient: the same request to the other server
                    self._leave()
                    self._failed = True
                    self.index += 1
                    self.stop.wait(pause)
                    pause = min(2.0, pause * 2)
                elif ok:
                    pause = 0.1
                else:  # the session is gone: open a new one (after a pause)
                    self._leave()
                    self.token = None
                    self.stop.wait(pause)
                    pause = min(2.0, pause * 2)
        finally:
            self._close()

    def _post(self, port: int, op: str, body: dict[str, Any]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=POLL_WAIT + 10)
        try:
            conn.request(
                "POST", f"{LONGPOLL}/{op}", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode("utf-8", "replace")

    def _open(self, port: int) -> bool | None:
        status, answer = self._post(port, "open", {"path": f"/ws/room/{ROOM}/"})
        if status in (502, 503, 504):
            return None
        if status != 200 or not isinstance(answer, dict) or "token" not in answer:
            self.errors.append((time.monotonic(), f"open answered {status} {answer}"))
            return False
        self.token, self.seen = answer["token"], 0
        self.generation += 1
        self._seqs = set()
        self._failed = False  # a new session is no recovery of the old one
        return True

    def _poll(self, port: int) -> bool | None:
        body = {"token": self.token, "ack": self.seen, "wait": POLL_WAIT}
        status, answer = self._post(port, "poll", body)
        if status in (502, 503, 504):
            return None
        if status == 409:  # superseded by a newer poll (a retry): nothing lost
            return True
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error", "") if isinstance(answer, dict) else answer
            why = (time.monotonic(), f"poll to :{port} answered {status} {error}")
            (self.lost if status in (404, 410) else self.errors).append(why)
            return False
        moved = isinstance(answer.get("token"), str) and answer["token"] != self.token
        if moved:
            self.token = answer["token"]
            self.new_tokens += 1
        if not self.live:
            self._join()
        # A new token without a failure seen: a held poll the other server relayed, then adopted.
        if self._failed or moved:
            self.recovered.append((time.monotonic(), self.generation, moved))
            self._failed = False
        self.port = port
        for item in answer.get("messages") or []:
            frame = decode_frame(item, where="server message", allow_close=True)
            if frame.seq <= self.seen:
                self.redelivered += 1
                continue
            self.gaps += frame.seq - self.seen - 1
            self.seq_duplicates += frame.seq in self._seqs
            self._seqs.add(frame.seq)
            self.seen = frame.seq
            if frame.is_close:
                why = f"closed by the server: {frame.close} {frame.reason}"
                self.lost.append((time.monotonic(), why))
                return False
            content = json.loads(frame.text or "{}")
            if "hello" in content:  # a new consumer: at open, or after an adoption
                self.channel, self.pid = content["channel"], content["hello"]
            elif "text" in content:
                number = int(content["text"])
                self.payload_duplicates += number in self.received
                self.received.add(number)
        return True

    def _close(self) -> None:
        self._leave()
        if self.token is None:
            return
        port = self.ports[self.index % len(self.ports)]
        with contextlib.suppress(OSError, http.client.HTTPException):
            self._post(port, "close", {"token": self.token, "code": 1000, "reason": ""})


@dataclass
class Clients:
    """The room's clients, by transport."""

    ws: list[Client]
    lp: list[PollClient]
    sse: list[SseClient]

    @property
    def all(self) -> list[Member]:
        return [*self.ws, *self.lp, *self.sse]


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
    longpoll_clients: int = 0
    longpoll_expected: int = 0
    longpoll_delivered: int = 0
    longpoll_lost: list[str] = field(default_factory=list)  # reopened after 404/410/close
    longpoll_errors: list[str] = field(default_factory=list)  # any other answer
    longpoll_seq_duplicates: int = 0
    longpoll_payload_duplicates: int = 0
    longpoll_redelivered: int = 0
    longpoll_gaps: int = 0
    longpoll_on_killed: int = 0  # sessions held by the killed server
    longpoll_adopted: int = 0  # ... of which answered again with a new token
    sse_expected: int = 0
    sse_delivered: int = 0
    sse_reconnects: list[float] = field(default_factory=list)
    faults: dict[str, float] = field(default_factory=dict)  # fault -> seconds from the start
    #: transport -> {window start (s from the start): messages lost, sent then}
    lost_windows: dict[str, dict[int, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"soak: {self.duration:.0f} s",
            f"  group_send (at-most-once, WebSocket): delivered {self.group_delivered}/"
            f"{self.group_expected} to clients connected at send time "
            f"({self.group_sent} sent, {self.group_refused} refused with LayerUnavailable)",
            f"  group_send (at-most-once, long-poll): delivered {self.longpoll_delivered}/"
            f"{self.longpoll_expected} to sessions live at send time",
            f"  long-poll sessions: {self.longpoll_clients} clients, "
            f"{len(self.longpoll_lost)} lost (reopened after 404/410 or a close), "
            f"{len(self.longpoll_errors)} other errors; kept twice: "
            f"{self.longpoll_seq_duplicates} seqs, {self.longpoll_payload_duplicates} messages "
            f"({self.longpoll_redelivered} redelivered frames dropped by seq, "
            f"{self.longpoll_gaps} seqs skipped by the server)",
            f"  long-poll sessions of the killed server: {self.longpoll_on_killed}, "
            f"adopted with a new token: {self.longpoll_adopted}",
            *(f"    {why}" for why in [*self.longpoll_lost, *self.longpoll_errors][:5]),
            f"  group_send (at-most-once, SSE): delivered {self.sse_delivered}/"
            f"{self.sse_expected} to streams open at send time, {len(self.sse_reconnects)} "
            f"reconnects"
            + (f", slowest {max(self.sse_reconnects):.2f} s" if self.sse_reconnects else ""),
            f"  background jobs (at-least-once): done {self.jobs_done}/{self.jobs_queued} "
            f"queued, {self.jobs_duplicated} ran twice, {self.jobs_refused} refused at send",
        ]
        if any(self.lost_windows.values()):
            faults = ", ".join(f"{name} at {t:.1f} s" for name, t in self.faults.items())
            out.append(f"  losses by send time ({LOSS_WINDOW} s windows; faults: {faults}):")
            for transport, windows in self.lost_windows.items():
                worst = sorted(windows.items(), key=lambda kv: -kv[1])[:4]
                if worst:
                    text = ", ".join(f"{t}-{t + LOSS_WINDOW} s: {n}" for t, n in sorted(worst))
                    out.append(f"    {transport}: {text}")
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
                f"FDs {slope['fds_per_min']:+.2f}/min ({slope['other_fds_per_min']:+.2f}/min "
                f"less client connections) over {slope['minutes']:.1f} min"
            )
            if "calm_minutes" in slope:
                out.append(
                    f"    after the last fault: RSS {slope['calm_rss_kb_per_min']:+.0f} KiB/min, "
                    f"FDs {slope['calm_fds_per_min']:+.2f}/min over {slope['calm_minutes']:.1f} min"
                )
        return out


def run(
    duration: float,
    workdir: Path,
    clients_count: int = 8,
    longpoll_count: int = 4,
    sse_count: int = 4,
) -> Report:
    """Run the soak for ``duration`` seconds; return the report (raises on set-up failure)."""
    from wsbridge import Channel
    from wsbridge.exceptions import LayerUnavailable
    from wsbridge.layers.redis import RedisLayer

    cluster = LocalCluster(workdir / "cluster")
    procs: list[Proc] = []
    stop = threading.Event()
    clients = Clients([], [], [])
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
        clients = Clients(
            [Client(ports, i, stop) for i in range(clients_count)],
            [PollClient(ports, i, stop) for i in range(longpoll_count)],
            [SseClient(ports, i, stop) for i in range(sse_count)],
        )
        for client in clients.all:
            client.start()
        deadline = time.monotonic() + 20
        while not all(c.intervals for c in clients.all):
            if time.monotonic() > deadline:
                missing = [type(c).__name__ for c in clients.all if not c.intervals]
                raise RuntimeError(f"clients did not connect: {missing}")
            time.sleep(0.05)
        time.sleep(0.5)
        return _traffic(duration, cluster, procs, clients, layer, out, Channel, LayerUnavailable)
    finally:
        stop.set()
        for client in clients.all:
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
    last_fault = started
    next_sample = started
    seq = job = 0
    pending_recovery: dict[str, float] = {}
    dead: set[str] = set()
    adopting: list[tuple[PollClient, int]] = []  # the killed server's sessions, generation
    killed_at = float("inf")
    slot = key_slot(layer.layout.group_key(ROOM).encode())
    while time.monotonic() - started < duration:
        now = time.monotonic()
        if schedule and now - started >= schedule[0][0] * duration:
            _, fault = schedule.pop(0)
            pending_recovery[fault] = now
            if fault == "server process":
                pending_recovery["memberships"] = pending_recovery["sse"] = now
                pending_recovery["long-poll"] = killed_at = now
                killed = procs[0].proc.pid
                dead = {c.channel for c in clients.all if c.pid == killed}
                adopting = [(c, c.generation) for c in clients.lp if c.pid == killed and c.token]
                report.longpoll_on_killed = len(adopting)
            _inject(fault, cluster, procs, slot)
            report.faults[fault] = now - started
            last_fault = now
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
        _check_recoveries(pending_recovery, report, clients, procs, out, adopting)
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
        _check_recoveries(pending_recovery, report, clients, procs, out, adopting)
        time.sleep(0.2)
    time.sleep(1)
    live = {c.channel for c in clients.all if c.live}
    report.stale_members = len(set(layer.group_channels(ROOM)) - live)
    report.group_sent = len(sent_at)
    for name, group in (("WebSocket", clients.ws), ("long-poll", clients.lp), ("SSE", clients.sse)):
        expected, delivered, lost = _delivery(sent_at, group, started)
        report.lost_windows[name] = lost
        if name == "WebSocket":
            report.group_expected, report.group_delivered = expected, delivered
        elif name == "long-poll":
            report.longpoll_expected, report.longpoll_delivered = expected, delivered
        else:
            report.sse_expected, report.sse_delivered = expected, delivered
    report.longpoll_clients = len(clients.lp)
    for lp in clients.lp:
        when = "{} at {:+.2f} s from the server kill"
        report.longpoll_lost += [when.format(why, t - killed_at) for t, why in lp.lost]
        report.longpoll_errors += [when.format(why, t - killed_at) for t, why in lp.errors]
        report.longpoll_seq_duplicates += lp.seq_duplicates
        report.longpoll_payload_duplicates += lp.payload_duplicates
        report.longpoll_redelivered += lp.redelivered
        report.longpoll_gaps += lp.gaps
    report.longpoll_adopted = sum(
        any(moved and g == gen and t > killed_at for t, g, moved in c.recovered)
        for c, gen in adopting
    )
    report.sse_reconnects = [r for c in clients.sse for r in c.reconnects]
    done, duplicated = _done(out)
    report.jobs_queued, report.jobs_done = len(jobs), len(done & jobs)
    report.jobs_duplicated = duplicated
    report.reconnects = [r for c in clients.ws for r in c.reconnects]
    for proc in procs:
        # The first WARM_UP seconds of a process (imports, pools filling) are no leak.
        steady = [s for s in proc.samples if s[0] - proc.samples[0][0] >= WARM_UP]
        clients_fds = proc.client_fds[len(proc.samples) - len(steady) :]
        if len(steady) >= 3:
            report.slopes[proc.name] = {
                "rss_kb_per_min": slope_per_minute([(t, r) for t, r, _ in steady]),
                "fds_per_min": slope_per_minute([(t, f) for t, _, f in steady]),
                "other_fds_per_min": slope_per_minute(
                    [(t, f - c) for (t, _, f), c in zip(steady, clients_fds, strict=True)]
                ),
                "minutes": (steady[-1][0] - steady[0][0]) / 60,
            }
        # After the last fault has settled (clients moved, failed-over connections
        # closed): a slope here is growth, not the step a fault leaves behind.
        calm = [s for s in steady if s[0] >= last_fault + CALM_AFTER]
        if len(calm) >= 3 and proc.name in report.slopes:
            report.slopes[proc.name]["calm_rss_kb_per_min"] = slope_per_minute(
                [(t, r) for t, r, _ in calm]
            )
            report.slopes[proc.name]["calm_fds_per_min"] = slope_per_minute(
                [(t, f) for t, _, f in calm]
            )
            report.slopes[proc.name]["calm_minutes"] = (calm[-1][0] - calm[0][0]) / 60
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


def _check_recoveries(pending, report, clients, procs, out, adopting) -> None:
    now = time.monotonic()
    if "server process" in pending:
        if all(c.live for c in clients.ws):
            report.recoveries["server kill (every client connected again)"] = now - pending.pop(
                "server process"
            )
    if "sse" in pending and all(c.live for c in clients.sse):
        report.recoveries["server kill (every SSE client connected again)"] = now - pending.pop(
            "sse"
        )
    if "long-poll" in pending:
        _check_adoption(pending, report, adopting)
    if "worker" in pending:
        lines = out.read_text().splitlines()
        if lines and procs[2].proc is not None and lines[-1].split()[1] == str(procs[2].proc.pid):
            report.recoveries["worker kill (first job done by the new worker)"] = now - pending.pop(
                "worker"
            )


def _check_adoption(pending, report, adopting: list[tuple[PollClient, int]]) -> None:
    """All the killed server's sessions answered again (same session): the slowest one's time."""
    killed_at = pending["long-poll"]
    firsts = []
    for client, generation in adopting:
        if client.generation != generation:  # lost, reopened: no adoption to time
            pending.pop("long-poll")
            return
        first = next((t for t, g, _ in client.recovered if t > killed_at and g == generation), None)
        if first is None:
            return  # not yet
        firsts.append(first)
    pending.pop("long-poll")
    if firsts:
        report.recoveries["server kill (long-poll sessions adopted)"] = max(firsts) - killed_at


def _delivery(
    sent_at: dict[int, float], clients: list[Any], started: float
) -> tuple[int, int, dict[int, int]]:
    """(expected, delivered, lost per window): each message once per client connected then.

    The windows (``LOSS_WINDOW`` s, by send time from ``started``) say where
    losses fell, beside the faults' times in the report.
    """
    expected = delivered = 0
    lost: dict[int, int] = {}
    for seq_no, when in sent_at.items():
        for client in clients:
            if client.connected_at(when):
                expected += 1
                if seq_no in client.received:
                    delivered += 1
                else:
                    window = int((when - started) // LOSS_WINDOW) * LOSS_WINDOW
                    lost[window] = lost.get(window, 0) + 1
    return expected, delivered, lost


def _done(out: Path) -> tuple[set[int], int]:
    ids = [int(line.split()[0]) for line in out.read_text().splitlines() if line.strip()]
    return set(ids), len(ids) - len(set(ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--clients", type=int, default=8, help="WebSocket clients (default 8)")
    parser.add_argument("--longpoll", type=int, default=4, help="long-poll clients (default 4)")
    parser.add_argument("--sse", type=int, default=4, help="SSE clients (default 4)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wsbridge-soak-") as tmp:
        report = run(args.duration, Path(tmp), args.clients, args.longpoll, args.sse)
    print("\n".join(report.lines()))
    print(json.dumps(report.__dict__, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
