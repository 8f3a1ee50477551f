"""Shared parts of the side-by-side peer benches (``longpoll_peers.py``, ``sse_peers.py``).

Three pieces, each run in its own process:

* the **orchestrator** (:func:`run_peers`, standard library only): per
  repetition, each target in turn (the order alternates between
  repetitions), it starts the target's server pinned to core 0 and the load
  client pinned to core 1, waits for every client to be connected and the
  server to go idle, asks for one warm-up burst and then ``--bursts``
  measured ones, reads the server's CPU time from ``/proc`` around each and
  the machine's CPU steal from ``/proc/stat``, then stops both by PID;
* the **load client** (:func:`run_client`, gevent): the same code for every
  target; N greenlets, one keep-alive HTTP/1.1 connection each (spread over
  127.0.0.x source addresses), each running the target's wire adapter
  (:class:`Adapter`); a burst is asked for with one HTTP request to the
  server (``GET /bench/burst?id=K&n=M``) and counted until every client has
  every message or ``--grace`` passes;
* the **servers**, in the bench scripts themselves.

Every message carries ``{"b": burst id, "i": index, "t": server send time}``
(``time.time()`` right before the send call); the client notes
``time.time()`` when the response holding it has been read. Both ends run on
this machine, so both stamps come from one clock.

Bounded everywhere: N clients, a fixed number of bursts and repetitions,
a timeout on every wait; only 127.0.0.0/8; only the PIDs started here are
stopped.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import RESULTS_DIR  # noqa: E402
from benchlib.procs import (  # noqa: E402
    CLIENT_CORE,
    CLK_TCK,
    SERVER_CORE,
    MachineMeter,
    Proc,
    cpu_seconds,
    free_port,
    raise_nofile,
    wait_port,
)

#: Linux IP_BIND_ADDRESS_NO_PORT: bind() only picks the address, connect() the port.
IP_BIND_ADDRESS_NO_PORT = 24
#: A measured window whose steal is above this many cores is marked as high-steal.
HIGH_STEAL_CORES = 0.10


# =============================================================== helpers ==


def steal_ticks() -> int:
    """CPU ticks the hypervisor gave other guests, all cores, since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return int(fields[7]) if len(fields) > 7 else 0


def cpu_ns_seconds(pid: int) -> float:
    """On-CPU time of every thread of ``pid`` in seconds, from schedstat (ns, not 10 ms ticks)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return cpu_seconds(pid)
    for task in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if total else cpu_seconds(pid)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile of sorted ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def source_address(index: int, per_addr: int) -> str:
    """The loopback source address of client ``index``: 127.0.0.2, .3, ... ``per_addr`` each."""
    k = index // max(1, per_addr)
    return f"127.0.{k >> 8}.{2 + (k & 255)}" if k < 254 * 256 else "127.0.0.1"


def message(burst: int, index: int) -> dict[str, Any]:
    """The payload of one broadcast message, stamped with the send time."""
    return {"b": burst, "i": index, "t": time.time()}


def parse_burst_query(query: str) -> tuple[int, int]:
    """``id`` and ``n`` of ``/bench/burst?id=K&n=M`` (n bounded to 1..1000)."""
    from urllib.parse import parse_qs

    q = parse_qs(query)
    return int(q.get("id", ["0"])[0]), max(1, min(1000, int(q.get("n", ["1"])[0])))


def json_response(start_response: Callable, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def server_nofile() -> None:
    """Soft RLIMIT_NOFILE to the hard limit in a server or client process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ====================================================== the HTTP client ==


class HttpError(Exception):
    """The server answered something the adapter did not expect."""


class HttpConn:
    """One keep-alive HTTP/1.1 connection (gevent socket) with just enough parsing.

    Responses with ``Content-Length``, ``Transfer-Encoding: chunked`` or
    ``Connection: close`` are read whole by :meth:`response`; :meth:`head`
    and :meth:`chunks` read a streaming (chunked) response piece by piece.
    """

    #: set TCP_QUICKACK before every read (``--quickack``): no delayed ACKs from the client.
    quickack = False

    def __init__(self, port: int, source: str | None = None, timeout: float | None = None) -> None:
        from gevent import socket as gsocket

        sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if source and source != "127.0.0.1":
            try:
                sock.setsockopt(gsocket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        self.sock = sock
        self.buf = b""
        self.chunked = False
        self.left = 0  # bytes left in the current chunk (streaming)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, method: str, path: str, body: bytes = b"", ctype: str = "") -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
            if ctype:
                head += f"Content-Type: {ctype}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)

    def _recv(self) -> bytes:
        if self.quickack:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return self.sock.recv(262144)

    def _fill(self) -> None:
        chunk = self._recv()
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def head(self) -> tuple[int, dict[str, str]]:
        """Read a response's status line and headers."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(None, 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.left = 0
        return status, headers

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                out, self.buf = self.buf[:end], self.buf[end + 2 :]
                return out
            self._fill()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one whole response."""
        status, headers = self.head()
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"]))
        if self.chunked:
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()  # the empty trailer
                    return status, headers, b"".join(parts)
                parts.append(self._exactly(size))
                self._line()
        parts = [self.buf]  # Connection: close: the rest of the stream
        self.buf = b""
        while True:
            chunk = self._recv()
            if not chunk:
                return status, headers, b"".join(parts)
            parts.append(chunk)

    def request(
        self, method: str, path: str, body: bytes = b"", ctype: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        self.send(method, path, body, ctype)
        return self.response()

    def chunks(self) -> Iterator[bytes]:
        """The body of a streaming response, as the bytes that arrive (chunk framing removed).

        Each value holds whatever complete chunk data has arrived so far;
        it ends when the stream ends.
        """
        while True:
            if not self.chunked:
                if self.buf:
                    out, self.buf = self.buf, b""
                    yield out
                chunk = self._recv()
                if not chunk:
                    return
                self.buf = chunk
                continue
            out = []
            while True:
                if self.left:
                    take = self.buf[: self.left]
                    self.buf = self.buf[self.left :]
                    self.left -= len(take)
                    out.append(take)
                    if self.left:
                        break
                    if len(self.buf) < 2:
                        self.left = -2  # the CRLF after the chunk still to come
                        break
                    self.buf = self.buf[2:]
                if self.left < 0:
                    if len(self.buf) < -self.left:
                        break
                    self.buf = self.buf[-self.left :]
                    self.left = 0
                end = self.buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(self.buf[:end].split(b";")[0], 16)
                self.buf = self.buf[end + 2 :]
                if size == 0:
                    if out:
                        yield b"".join(out)
                    return
                self.left = size
            if out:
                yield b"".join(out)
            chunk = self._recv()
            if not chunk:
                return
            self.buf += chunk


# ======================================================== the load client ==


class Adapter:
    """One target's wire format, driven by the shared load client.

    ``run(index, conn, client)`` opens the session on ``conn``, calls
    ``client.ready()`` once the connection is in the broadcast group, and
    then calls ``client.deliver(messages, arrived)`` for every response (or
    stream piece) that holds broadcast messages, until ``client.stopping``.
    """

    #: the adapter's name (``--adapter``), for logs.
    name = "?"

    def run(self, index: int, conn: HttpConn, client: LoadClient) -> None:
        raise NotImplementedError


class LoadClient:
    """N connections and the burst bookkeeping; commands on stdin, JSON lines on stdout."""

    def __init__(self, args: Any, adapter: Adapter) -> None:
        self.args = args
        self.adapter = adapter
        self.connected = 0
        self.errors: dict[str, int] = {}
        self.stopping = False
        self.burst_id = -1
        self.expected = 0
        self.count = 0
        self.lat: list[float] = []
        self.first_send = 0.0
        self.last_send = 0.0
        self.last_arrival = 0.0
        self.stale = 0
        self.per_response: list[int] = []
        self._holding: set[Any] = set()
        import gevent.event

        self.done = gevent.event.Event()

    # -- called by the adapters --

    def ready(self) -> None:
        import gevent

        self.connected += 1
        me = gevent.getcurrent()
        if me in self._holding:
            self._holding.discard(me)
            self.opening.release()

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def deliver(self, messages: list[dict[str, Any]], arrived: float) -> None:
        bid = self.burst_id
        got = 0
        for m in messages:
            if m.get("b") != bid:
                self.stale += 1
                continue
            t = m["t"]
            self.lat.append(arrived - t)
            if t < self.first_send or not self.first_send:
                self.first_send = t
            if t > self.last_send:
                self.last_send = t
            got += 1
        if got:
            self.count += got
            self.per_response.append(got)
            if arrived > self.last_arrival:
                self.last_arrival = arrived
            if self.count >= self.expected:
                self.done.set()

    # -- the process --

    def emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def one(self, index: int) -> None:
        import gevent

        me = gevent.getcurrent()
        self.opening.acquire()
        self._holding.add(me)
        conn = None
        try:
            conn = HttpConn(
                self.args.port, source_address(index, self.args.per_addr), self.args.sock_timeout
            )
            self.adapter.run(index, conn, self)
        except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
            if not self.stopping:
                self.error(f"{type(exc).__name__}: {str(exc)[:60]}")
        finally:
            if me in self._holding:
                self._holding.discard(me)
                self.opening.release()
            if conn is not None:
                conn.close()

    def burst(self, bid: int, n: int) -> dict[str, Any]:
        import gevent

        self.burst_id = bid
        self.expected = self.connected * n
        self.count = 0
        self.lat = []
        self.per_response = []
        self.first_send = 0.0
        self.last_send = 0.0
        self.last_arrival = 0.0
        self.done.clear()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        trigger = time.time()
        control = HttpConn(self.args.port, "127.0.0.1", 30)
        try:
            status, _, body = control.request("GET", f"/bench/burst?id={bid}&n={n}")
        finally:
            control.close()
        if status != 200:
            raise HttpError(f"burst trigger answered {status}: {body[:200]!r}")
        self.done.wait(timeout=self.args.grace)
        gevent.sleep(0)
        wall = time.monotonic() - wall0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        lat = sorted(x * 1000 for x in self.lat)
        span = self.last_arrival - self.first_send if self.count else 0.0
        return {
            "burst": bid,
            "messages": n,
            "expected": self.expected,
            "delivered": self.count,
            "span_s": round(span, 4),
            "trigger_to_first_send_ms": round((self.first_send - trigger) * 1000, 2)
            if self.count
            else None,
            "msgs_per_s": round(self.count / span, 1) if span > 0 else None,
            # first to last send stamp seen: how long the server's send loop took
            "send_span_ms": round((self.last_send - self.first_send) * 1000, 2)
            if self.count
            else None,
            "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(lat[-1], 2) if lat else None,
            "msgs_per_response": round(self.count / max(1, len(self.per_response)), 2),
            "client_cpu_s": round(cpu, 3),
            "client_cpu_ratio": round(cpu / wall, 3) if wall else None,
            "stale": self.stale,
            "errors": dict(self.errors),
            "lat_ms": [round(x, 3) for x in lat],
        }

    def main(self) -> None:
        import gevent
        from gevent.fileobject import FileObjectPosix
        from gevent.lock import BoundedSemaphore

        server_nofile()
        t0 = time.monotonic()
        # At most --concurrency sessions being opened at once; a greenlet keeps
        # its slot from connect() until its session is in the group (ready()).
        self.opening = BoundedSemaphore(self.args.concurrency)
        self.workers = [gevent.spawn(self.one, i) for i in range(self.args.clients)]
        deadline = time.monotonic() + self.args.connect_timeout
        while self.connected + sum(self.errors.values()) < self.args.clients:
            if time.monotonic() > deadline:
                break
            gevent.sleep(0.05)
        self.emit(
            "ready",
            connected=self.connected,
            connect_s=round(time.monotonic() - t0, 2),
            errors=dict(self.errors),
        )
        stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
        end = time.monotonic() + self.args.timeout
        while time.monotonic() < end:
            line = stdin.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd.get("cmd") == "burst":
                try:
                    self.emit("burst", **self.burst(int(cmd["id"]), int(cmd["n"])))
                except Exception as exc:  # noqa: BLE001
                    self.emit("error", error=f"{type(exc).__name__}: {exc}")
            elif cmd.get("cmd") == "quit":
                break
        self.stopping = True
        self.emit("bye", errors=dict(self.errors))
        os._exit(0)  # noqa: SLF001 - thousands of sockets: no orderly teardown needed


def add_client_arguments(parser: Any) -> None:
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--adapter", default="")
    parser.add_argument("--concurrency", type=int, default=100, help="connections opened at once")
    parser.add_argument("--per-addr", type=int, default=250, help="clients per source address")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    parser.add_argument("--sock-timeout", type=float, default=None)
    parser.add_argument("--grace", type=float, default=60.0, help="s to wait for a burst")
    parser.add_argument(
        "--atomic",
        action="store_true",
        help="the server sends a burst's messages without yielding between two "
        "(default: gevent.sleep(0) after each send, as a producer greenlet that does I/O would)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the servers during the measured bursts (diagnosis only: it shares core 1)",
    )
    parser.add_argument(
        "--quickack",
        action="store_true",
        help="client sets TCP_QUICKACK before every read (no delayed ACKs; see the README)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="s, the client's hard cap")


def run_client(args: Any, adapter: Adapter) -> None:
    from gevent import monkey

    monkey.patch_all()
    HttpConn.quickack = bool(args.quickack)
    LoadClient(args, adapter).main()


# ======================================================== the orchestrator ==


def settle(pid: int, timeout: float, window: float = 0.5, idle_cpu: float = 0.02) -> float:
    """Wait until process ``pid`` uses less than ``idle_cpu`` s of CPU in ``window`` s.

    Returns the seconds waited. Used with the same window and threshold for
    every target, so "all polls parked / all streams open" means the same.
    """
    t0 = time.monotonic()
    end = t0 + timeout
    last = cpu_ns_seconds(pid)
    while time.monotonic() < end:
        time.sleep(window)
        now = cpu_ns_seconds(pid)
        if now - last < idle_cpu:
            break
        last = now
    return round(time.monotonic() - t0, 2)


class Target:
    """A server to measure: a name, its command line (without --port) and notes for the docs."""

    def __init__(self, name: str, cmd: list[str], adapter: str, env: dict[str, str] | None = None):
        self.name = name
        self.cmd = cmd
        self.adapter = adapter
        self.env = env or {}


def measure_target(
    target: Target,
    client_cmd: list[str],
    args: Any,
    log_dir: Path,
    rep: int,
) -> dict[str, Any]:
    """One target in one repetition: server + client up, warm-up, bursts, both stopped."""
    port = free_port()
    result: dict[str, Any] = {"target": target.name, "rep": rep, "ok": False}
    server = Proc(
        f"r{rep}-{target.name}-server",
        [
            *target.cmd,
            "--port",
            str(port),
            "--clients",
            str(args.clients),
            *(["--atomic"] if args.atomic else []),
        ],
        log_dir=log_dir,
        env=target.env,
        core=SERVER_CORE,
    )
    client = None
    spy = None
    try:
        wait_port(port, 30, server.popen)
        client = Proc(
            f"r{rep}-{target.name}-client",
            [
                *client_cmd,
                "--adapter",
                target.adapter,
                "--port",
                str(port),
                "--clients",
                str(args.clients),
                "--per-addr",
                str(args.per_addr),
                "--concurrency",
                str(args.concurrency),
                "--grace",
                str(args.grace),
                "--connect-timeout",
                str(args.connect_timeout),
                "--timeout",
                str(args.connect_timeout + 300 + args.bursts * (args.grace + 60)),
                *(["--quickack"] if args.quickack else []),
            ],
            log_dir=log_dir,
            core=CLIENT_CORE,
            stdin=True,
            stdout_lines=True,
        )
        ready = client.expect("ready", args.connect_timeout + 30)
        result["connected"] = ready["connected"]
        result["connect_s"] = ready["connect_s"]
        result["connect_errors"] = ready["errors"]
        result["settle_s"] = settle(server.pid, 60)
        result["server_rss_mib"] = round(_rss_kib(server.pid) / 1024, 1)
        # warm-up: one message, not counted
        client.tell(json.dumps({"cmd": "burst", "id": 0, "n": 1}))
        result["warmup"] = _strip(client.expect("burst", args.grace + 60))
        settle(server.pid, 60)
        spy = start_profile(args, log_dir, f"r{rep}-{target.name}", server.pid)
        bursts = []
        for b in range(1, args.bursts + 1):
            meter = MachineMeter([server.pid, client.pid]).start()
            steal0 = steal_ticks()
            cpu0 = cpu_ns_seconds(server.pid)
            client.tell(json.dumps({"cmd": "burst", "id": b, "n": args.messages}))
            got = client.expect("burst", args.grace + 60)
            result.setdefault("lat_ms", []).extend(got.pop("lat_ms") or [])
            got["settle_s"] = settle(server.pid, 60)
            got["server_cpu_s"] = round(cpu_ns_seconds(server.pid) - cpu0, 4)
            got["steal_ticks"] = steal_ticks() - steal0
            got["machine"] = meter.stop()
            bursts.append(got)
        result["bursts"] = bursts
        result["ok"] = True
        client.tell(json.dumps({"cmd": "quit"}))
        try:
            client.expect("bye", 10)
        except (TimeoutError, RuntimeError):
            pass
    except Exception as exc:  # noqa: BLE001 - reported in the table, never hidden
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        stop_profile(spy)
        if client is not None:
            client.stop()
        server.stop()
    if result["ok"]:
        summarize(result)
    return result


def start_profile(args: Any, log_dir: Path, tag: str, pid: int) -> Proc | None:
    """py-spy (``bench/.venvs/tools``) on the server during the measured bursts (``--profile``)."""
    if not getattr(args, "profile", False):
        return None
    spy = HERE / ".venvs" / "tools" / "bin" / "py-spy"
    if not spy.exists():
        print(f"[profile] {spy} is missing: no profile", flush=True)
        return None
    out = log_dir / "profiles" / f"{tag}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--output", str(out)]
    cmd += ["--nonblocking", "--rate", "200"]
    proc = Proc(f"{tag}-py-spy", cmd, log_dir=log_dir, core=CLIENT_CORE)
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop_profile(proc: Proc | None) -> None:
    """SIGINT: py-spy writes its file and exits; then the usual stop by PID."""
    if proc is None:
        return
    import signal

    if proc.alive():
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except Exception:  # noqa: BLE001
            pass
    proc.stop()


def _strip(burst: dict[str, Any]) -> dict[str, Any]:
    burst.pop("lat_ms", None)
    return burst


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def summarize(result: dict[str, Any]) -> None:
    """The target's figures over its measured bursts (latency over every sample)."""
    bursts = result["bursts"]
    delivered = sum(b["delivered"] for b in bursts)
    expected = sum(b["expected"] for b in bursts)
    span = sum(b["span_s"] for b in bursts)
    cpu = sum(b["server_cpu_s"] for b in bursts)
    lat = sorted(result.pop("lat_ms", []))
    steal = sum(b["steal_ticks"] for b in bursts)
    result.update(
        delivered=delivered,
        expected=expected,
        msgs_per_s=round(delivered / span, 1) if span else None,
        p50_ms=round(pct(lat, 50), 2),
        p99_ms=round(pct(lat, 99), 2),
        max_ms=round(lat[-1], 2) if lat else None,
        cpu_us_per_delivery=round(cpu / max(1, delivered) * 1e6, 1),
        client_cpu_ratio=max(b["client_cpu_ratio"] or 0 for b in bursts),
        steal_ticks=steal,
        steal_cores=round(max(b["machine"]["steal_cores"] for b in bursts), 3),
        others_cores=round(max(b["machine"]["others_cores"] for b in bursts), 3),
        msgs_per_response=round(
            sum(b["msgs_per_response"] * b["delivered"] for b in bursts) / max(1, delivered), 2
        ),
    )


def run_peers(
    *,
    bench: str,
    targets: list[Target],
    client_cmd: list[str],
    args: Any,
    ratio: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Every repetition: all targets, order alternating; returns (and writes) the results."""
    raise_nofile()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS_DIR / f"{bench}-{run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "bench": bench,
        "run_id": run_id,
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "clients": args.clients,
        "messages": args.messages,
        "bursts": args.bursts,
        "repeat": args.repeat,
        "nproc": os.cpu_count(),
        "load_before": os.getloadavg(),
        "pinning": f"server on core {SERVER_CORE}, client on core {CLIENT_CORE} (taskset)",
        "quickack": bool(args.quickack),
        "atomic": bool(args.atomic),
        "clk_tck": CLK_TCK,
    }
    reps = []
    for rep in range(1, args.repeat + 1):
        order = targets if rep % 2 else list(reversed(targets))
        steal0 = steal_ticks()
        t0 = time.monotonic()
        load0 = os.getloadavg()[0]
        rows = []
        for target in order:
            print(f"[{bench}] rep {rep}: {target.name} ...", flush=True)
            row = measure_target(target, client_cmd, args, out_dir, rep)
            rows.append(row)
            print(f"[{bench}]   {one_line(row)}", flush=True)
        wall = time.monotonic() - t0
        steal = steal_ticks() - steal0
        by_name = {r["target"]: r for r in rows}
        rep_out = {
            "rep": rep,
            "order": [t.name for t in order],
            "steal_ticks": steal,
            "steal_cores": round(steal / CLK_TCK / wall, 3) if wall else None,
            "wall_s": round(wall, 1),
            "load_start": round(load0, 2),
            "load_end": round(os.getloadavg()[0], 2),
            "targets": by_name,
        }
        if all(r.get("ok") for r in rows):
            rep_out["ratio"] = ratio(by_name[targets[0].name], by_name[targets[1].name])
        rep_out["high_steal"] = (
            any((r.get("steal_cores") or 0) > HIGH_STEAL_CORES for r in rows)
            or (rep_out["steal_cores"] or 0) > HIGH_STEAL_CORES
        )
        reps.append(rep_out)
    report = {"meta": meta, "reps": reps}
    meta["load_after"] = os.getloadavg()
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    print(f"[{bench}] results: {out_dir / 'results.json'}")
    return report


def one_line(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"{r['target']}: FAILED {r.get('error')}"
    return (
        f"{r['target']}: {r['delivered']}/{r['expected']} delivered, "
        f"{r['msgs_per_s']:,.0f} msg/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
        f"{r['cpu_us_per_delivery']} µs CPU/delivery, client CPU {r['client_cpu_ratio']}, "
        f"steal {r['steal_ticks']} ticks, connect {r['connect_s']} s"
    )


def print_report(report: dict[str, Any], names: list[str], ratio_cols: list[str]) -> None:
    """The per-repetition table (markdown, as the README shows it)."""
    head = [
        "rep",
        "steal ticks (cores), rep",
        "target",
        "steal ticks, bursts",
        "others (cores)",
        "delivered",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/delivery",
        "client CPU",
    ]
    print("\n| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for rep in report["reps"]:
        flag = " HIGH" if rep["high_steal"] else ""
        steal = f"{rep['steal_ticks']} ({rep['steal_cores']}){flag}"
        for name in rep["order"]:
            r = rep["targets"].get(name, {"ok": False, "error": "not run"})
            if not r.get("ok"):
                cells = [str(rep["rep"]), steal, name, "FAILED: " + str(r.get("error"))[:80]]
                cells += [""] * (len(head) - len(cells))
            else:
                cells = [
                    str(rep["rep"]),
                    steal,
                    name,
                    str(r["steal_ticks"]),
                    f"{r['others_cores']:.2f}",
                    f"{r['delivered']:,}/{r['expected']:,}",
                    f"{r['msgs_per_s']:,.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['cpu_us_per_delivery']:.1f}",
                    f"{r['client_cpu_ratio']:.2f}",
                ]
            print("| " + " | ".join(cells) + " |")
        if "ratio" in rep:
            text = ", ".join(f"{k} {rep['ratio'][k]}" for k in ratio_cols)
            print(f"| {rep['rep']} | | {names[0]} / {names[1]} | {text} |" + " |" * (len(head) - 4))
    ratios = [rep["ratio"] for rep in report["reps"] if "ratio" in rep]
    if ratios:
        import statistics

        medians = []
        for k in ratio_cols:
            values = [r[k] for r in ratios if isinstance(r.get(k), (int, float))]
            if k == "met":
                medians.append(f"met {sum(1 for r in ratios if r.get('met'))}/{len(ratios)}")
            elif values:
                medians.append(f"{k} {statistics.median(values):.2f}")
        print(f"\nmedian ratios over {len(ratios)} repetitions: " + ", ".join(medians))
    meta = report["meta"]
    print(
        f"\nload average before {tuple(round(x, 2) for x in meta['load_before'])}, "
        f"after {tuple(round(x, 2) for x in meta['load_after'])}"
    )
