"""One process holds N open held requests, SSE streams or idle WebSockets; one event reaches all.

    .venv/bin/python bench/http_bench.py [--streams 10000] [--modes sse,held,ws] [--rounds 3]

Two processes on loopback: the server (``wrap()`` on wsbridge's pywsgi server,
in-memory layer; every consumer in group ``bench``) and this process, a
gevent load client holding one connection per stream. Per mode:

1. the server's RSS is read with nothing open;
2. the client opens N streams (``sse``: ``GET /bench/sse/``, an SseConsumer;
   ``held``: ``GET /bench/held/``, an HttpConsumer that answers on the group
   event; ``ws``: an idle WebsocketConsumer, the yardstick) and waits until
   the server has N consumers attached;
3. the server's RSS is read again: (after - before) / N is the memory per
   open stream;
4. R rounds: the client asks the server for one ``group_send``; the event
   carries the server's send time and every connection notes when it
   arrived. Held clients send their next request once every stream of the
   round has its answer (so a round times delivery, not delivery racing N
   new requests).

Reports delivery latency p50/p99/max, the time until the last stream had it,
and the fan-out time of ``group_send`` itself. Bounded: N streams, R rounds,
a global deadline; both processes stop by themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MODES = ("sse", "held", "ws")


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted) if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the server process ---------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gc

    import greenlet

    from wsbridge import HttpConsumer, Router, SseConsumer, WebsocketConsumer, get_channel_layer
    from wsbridge.transport.server import make_server
    from wsbridge.transport.wsgi import wrap

    raise_nofile(args.streams + 1000)
    routes = Router()

    @routes.http("bench/sse/")
    class BenchSse(SseConsumer):
        groups = ["bench"]

        def bench_msg(self, event: dict[str, Any]) -> None:
            self.send_event(event["text"])

    @routes.http("bench/held/")
    class BenchHeld(HttpConsumer):
        groups = ["bench"]
        hold_timeout = 0  # held until the event, however long the client takes to open all

        def handle(self, body: bytes) -> None:
            pass

        def bench_msg(self, event: dict[str, Any]) -> None:
            self.send_response(200, event["text"], content_type="application/json")

    @routes.websocket("bench/ws/")
    class BenchWs(WebsocketConsumer):
        groups = ["bench"]

        def bench_msg(self, event: dict[str, Any]) -> None:
            self.send(text_data=event["text"])

    def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        layer = get_channel_layer()
        if path == "/broadcast":
            started = time.time()
            text = json.dumps({"r": int(environ.get("QUERY_STRING") or 0), "t": started})
            skipped = layer.group_send("bench", {"type": "bench.msg", "text": text})
            body: dict[str, Any] = {"fanout_ms": (time.time() - started) * 1000, "skipped": skipped}
        elif path == "/freeze":
            gc.collect()
            gc.freeze()  # the open streams' objects leave the collector's generations
            body = {"frozen": gc.get_freeze_count()}
        elif path == "/stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            body = {
                "attached": layer.stats()["attached"],
                "rss_kib": rss_kib(),
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
            if "greenlets" in environ.get("QUERY_STRING", ""):
                gc.collect()
                body["greenlets"] = sum(
                    1 for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and not g.dead
                )
        else:
            body = {}
        data = json.dumps(body).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    # Group capacity: one event per round; the default capacity is plenty.
    application = wrap(site, router=routes, layer=get_channel_layer(), http={"hold_timeout": 0})
    server = make_server(application, "127.0.0.1", 0)
    server.backlog = 4096
    server.start()
    import signal

    import gevent
    from gevent.event import Event

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    print(f"PORT {server.server_port}", flush=True)
    stop.wait(args.deadline)  # the client sends SIGTERM when it is done
    server.stop(timeout=1)


# -- the load client (this process) ------------------------------------------------------


class Load:
    """N connections to the server of one mode, with their arrival times per round."""

    def __init__(self, port: int, mode: str, streams: int, rounds: int) -> None:
        self.port = port
        self.mode = mode
        self.streams = streams
        self.rounds = rounds
        self.ready = 0
        self.failed = 0
        self.latencies: dict[int, list[float]] = {r: [] for r in range(rounds)}
        self.last_arrival: dict[int, float] = {}
        self.stop = False
        from gevent.event import Event

        # Held clients send their next request once every stream has its answer, so
        # a round measures delivery alone, not delivery racing 10,000 new requests.
        self.next_round = [Event() for _ in range(rounds)]

    def _record(self, payload: bytes) -> None:
        now = time.time()
        start = payload.find(b'{"r"')
        while start != -1:
            end = payload.find(b"}", start)
            item = json.loads(payload[start : end + 1])
            self.latencies[item["r"]].append((now - item["t"]) * 1000)
            self.last_arrival[item["r"]] = max(self.last_arrival.get(item["r"], 0), now)
            start = payload.find(b'{"r"', end)

    def run_one(self) -> None:
        from gevent import socket

        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        except OSError:
            self.failed += 1
            return
        try:
            getattr(self, f"_{self.mode}")(sock)
        except (OSError, ValueError):
            if not self.stop:
                self.failed += 1
        finally:
            sock.close()

    def _sse(self, sock: Any) -> None:
        sock.sendall(
            b"GET /bench/sse/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        head = _read_until(sock, b":\n\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(head[:40])
        self.ready += 1
        sock.settimeout(None)
        while not self.stop:
            data = sock.recv(65536)
            if not data:
                return
            self._record(data)

    def _held(self, sock: Any) -> None:
        for r in range(self.rounds):
            if r:
                self.next_round[r].wait()
            sock.sendall(b"GET /bench/held/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            self.ready += 1
            sock.settimeout(None)
            head = _read_until(sock, b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += sock.recv(65536)
            self._record(body)

    def _ws(self, sock: Any) -> None:
        sock.sendall(
            b"GET /bench/ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = _read_until(sock, b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ValueError(head[:40])
        self.ready += 1
        sock.settimeout(None)
        while not self.stop:
            data = sock.recv(65536)
            if not data:
                return
            if data[0] & 0x0F == 0x9:  # a ping: answer with a masked pong
                payload = data[2 : 2 + (data[1] & 0x7F)]
                sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            self._record(data)


def _read_until(sock: Any, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("closed")
        data += chunk
    return data


def _get(port: int, path: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as answer:
        return json.loads(answer.read())


def _wait(condition: Any, deadline: float, what: str) -> None:
    import gevent

    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        gevent.sleep(0.05)


def bench_mode(port: int, mode: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    import gevent
    from gevent.pool import Pool

    load_before = os.getloadavg()[0]
    before = _get(port, "/stats?greenlets")
    load = Load(port, mode, args.streams, args.rounds)
    opening = time.monotonic()
    pool = Pool(args.streams)
    for i in range(args.streams):
        pool.spawn(load.run_one)
        if i % args.concurrency == args.concurrency - 1:  # at most ~concurrency connects in flight
            _wait(
                lambda i=i: load.ready + load.failed >= i + 1 - args.concurrency,
                deadline,
                "connections to open",
            )
    _wait(lambda: load.ready + load.failed >= args.streams, deadline, "all streams")
    _wait(lambda: _get(port, "/stats")["attached"] >= load.ready, deadline, "attached consumers")
    opened_s = time.monotonic() - opening
    gevent.sleep(0.5)
    full = _get(port, "/stats?greenlets")
    if args.gc_freeze:
        _get(port, "/freeze")
    fanouts = []
    per_round = []
    for r in range(args.rounds):
        expected = args.streams - load.failed
        if mode == "held" and r:
            _wait(
                lambda n=expected: _get(port, "/stats")["attached"] >= n,
                deadline,
                "held requests of the next round",
            )
        cpu_before = _get(port, "/stats")["cpu_s"]
        sent = time.time()
        fanouts.append(_get(port, f"/broadcast?{r}"))
        _wait(
            lambda r=r: len(load.latencies[r]) >= args.streams - load.failed,
            deadline,
            "delivery to every stream",
        )
        if mode == "held":  # the answered requests end (disconnect(), groups left): part of it
            _wait(lambda: _get(port, "/stats")["attached"] == 0, deadline, "held requests to end")
        cpu_ms = (_get(port, "/stats")["cpu_s"] - cpu_before) * 1000
        lat = load.latencies[r]
        per_round.append(
            {
                # server CPU per delivered event: steady even when the machine is busy
                "server_cpu_us_per_stream": round(cpu_ms * 1000 / max(1, len(lat)), 1),
                "delivered": len(lat),
                "p50_ms": round(percentile(lat, 0.50), 1),
                "p99_ms": round(percentile(lat, 0.99), 1),
                "max_ms": round(max(lat), 1) if lat else None,
                "all_in_ms": round((load.last_arrival.get(r, sent) - sent) * 1000, 1),
                "fanout_ms": round(fanouts[-1]["fanout_ms"], 1),
            }
        )
        if r + 1 < args.rounds:
            load.next_round[r + 1].set()
        gevent.sleep(0.2)
    load.stop = True
    pool.kill(block=True, timeout=10)
    everything = [x for r in range(args.rounds) for x in load.latencies[r]]
    streams = full["attached"] or args.streams
    return {
        "mode": mode + ("+gc.freeze" if args.gc_freeze else ""),
        "streams": args.streams,
        "failed": load.failed,
        "open_s": round(opened_s, 1),
        "rss_before_mib": round(before["rss_kib"] / 1024, 1),
        "rss_open_mib": round(full["rss_kib"] / 1024, 1),
        "kib_per_stream": round((full["rss_kib"] - before["rss_kib"]) / streams, 2),
        "greenlets_per_stream": round((full["greenlets"] - before["greenlets"]) / streams, 2),
        "rounds": per_round,
        "p50_ms": round(percentile(everything, 0.50), 1),
        "p99_ms": round(percentile(everything, 0.99), 1),
        "server_cpu_us_per_stream": min(x["server_cpu_us_per_stream"] for x in per_round),
        # 1-minute load average of the machine around the run: other work skews the figures
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }


def run_client(args: argparse.Namespace) -> list[dict[str, Any]]:
    from gevent import monkey

    monkey.patch_all()
    raise_nofile(args.streams + 1000)
    results = []
    for mode in args.modes:
        # A fresh server per mode: memory figures start from the same empty process.
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "server",
                "--streams",
                str(args.streams),
                "--deadline",
                str(args.deadline),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            if not line.startswith("PORT "):
                raise RuntimeError(f"server did not start: {line!r}")
            port = int(line.split()[1])
            deadline = time.monotonic() + args.deadline
            result = bench_mode(port, mode, args, deadline)
            results.append(result)
            print(json.dumps(result), flush=True)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return results


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'mode':6} {'streams':>7} {'failed':>6} {'KiB/stream':>10} {'greenlets/stream':>16} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'all-in ms (per round)':>24} {'cpu us/stream':>13}  "
        "load avg"
    )
    for r in results:
        allin = ", ".join(str(x["all_in_ms"]) for x in r["rounds"])
        print(
            f"{r['mode']:6} {r['streams']:>7} {r['failed']:>6} {r['kib_per_stream']:>10} "
            f"{r['greenlets_per_stream']:>16} {r['p50_ms']:>7} {r['p99_ms']:>7} {allin:>24} "
            f"{r['server_cpu_us_per_stream']:>13}  "
            f"{r['loadavg'][0]}..{r['loadavg'][1]} on {r['cpus']} cpus"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["client", "server"], default="client")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument(
        "--modes", default="sse,held,ws", type=lambda s: [m for m in s.split(",") if m in MODES]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=500, help="connects in flight")
    parser.add_argument("--deadline", type=float, default=240, help="seconds per mode, at most")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() in the server once the streams are open (an experiment: "
        "how much of the cost is the cyclic collector walking a big heap)",
    )
    args = parser.parse_args()
    if args.role == "server":
        run_server(args)
        return
    results = run_client(args)
    report(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
