"""One process holds N concurrent long-poll clients and delivers a group broadcast to all.

    .venv/bin/python bench/longpoll_bench.py [--clients 5000] [--rounds 5]

Runs two processes on loopback: the server (``wrap()`` on wsbridge's pywsgi
server, in-memory layer, one consumer per session in group ``bench``) and a
gevent load client holding one keep-alive connection per long-poll session.
Once every client has a poll parked on the server, the client asks for a
broadcast; the message carries the server's send time, each client notes
when its poll answer arrived. Reports delivery latency p50/p99/max per
round and overall, the server's RSS before and after, the fan-out time, and
the server CPU time per delivery (answering the poll and taking the next one).
Bounded: N clients, R rounds, a global deadline; everything stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def busy_fraction(window: float = 1.0) -> float:
    """Share of all cores busy over ``window`` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values), idle

    total0, idle0 = sample()
    time.sleep(window)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until other processes leave the cores mostly idle."""
    end = time.monotonic() + max_wait
    busy = busy_fraction()
    while busy > threshold and time.monotonic() < end:
        busy = busy_fraction()
    return busy


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the server process ------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> None:
    from gevent import monkey

    monkey.patch_all()
    from gevent import pywsgi

    from wsbridge import Router, WebsocketConsumer, get_channel_layer
    from wsbridge.transport.server import handler_class
    from wsbridge.transport.wsgi import wrap

    raise_nofile(args.clients * 2 + 1000)
    routes = Router()

    @routes.websocket("ws/bench/")
    class Bench(WebsocketConsumer):
        groups = ["bench"]

        def bench_msg(self, event):
            self.send(text_data=event["text"])

    def site(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/broadcast":
            started = time.time()
            skipped = get_channel_layer().group_send(
                "bench", {"type": "bench.msg", "text": json.dumps({"t": started})}
            )
            body = {"fanout_ms": (time.time() - started) * 1000, "skipped": skipped}
        elif path == "/stats":
            transport = application.longpoll_transport
            parked = sum(1 for s in transport.sessions.values() if s.poller is not None)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            body = {
                "sessions": len(transport.sessions),
                "parked": parked,
                "rss_kib": rss_kib(),
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        else:
            body = {}
        data = json.dumps(body).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    options: dict = {"poll_timeout": 120, "session_timeout": 300}
    layer = None
    if args.layer != "memory":  # one Redis: with (redis) or without (redis-nockpt) checkpoints
        from wsbridge.layers.redis import RedisLayer

        layer = RedisLayer(hosts=[args.redis], prefix="lpbench" + os.urandom(4).hex(), expiry=600)
        options["checkpoints"] = args.layer == "redis"
    application = wrap(
        site,
        router=routes,
        secret="bench-secret-0123456789",
        longpoll=options,
        **({"layer": layer} if layer is not None else {}),
    )
    server = pywsgi.WSGIServer(
        ("127.0.0.1", 0), application, handler_class=handler_class(), log=None, backlog=4096
    )
    server.start()
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


# -- the load client process -------------------------------------------------------------


class Conn:
    """A keep-alive HTTP/1.1 connection with just enough parsing for JSON answers."""

    def __init__(self, port: int) -> None:
        from gevent import socket

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        data = json.dumps(body).encode()
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(v)
            for k, _, v in (x.partition(":") for x in lines[1:])
            if k.lower() == "content-length"
        )
        while len(self.buf) < length:
            self._fill()
        payload, self.buf = self.buf[:length], self.buf[length:]
        return status, json.loads(payload)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk


def run_client(args: argparse.Namespace) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.pool import Pool

    raise_nofile(args.clients + 1000)
    lp = "/_wsbridge/lp/"
    port = args.port
    clients: list[dict] = []

    def open_one(_: int) -> None:
        conn = Conn(port)
        status, body = conn.post(lp + "open", {"path": "/ws/bench/"})
        assert status == 200, body
        clients.append({"conn": conn, "token": body["token"], "seen": 0, "lat": []})

    started = time.time()
    Pool(200).map(open_one, range(args.clients))
    open_s = time.time() - started

    def poll_loop(client: dict, rounds: int) -> None:
        for _ in range(rounds):
            status, body = client["conn"].post(
                lp + "poll", {"token": client["token"], "ack": client["seen"]}
            )
            arrived = time.time()
            for message in body.get("messages", []):
                if message["seq"] > client["seen"]:
                    client["seen"] = message["seq"]
                    client["lat"].append((arrived - json.loads(message["text"])["t"]) * 1000)

    control = Conn(port)
    stats = lambda: control.post("/stats", {})[1]  # noqa: E731
    report: dict = {"clients": args.clients, "open_s": round(open_s, 2), "rounds": []}
    workers = [gevent.spawn(poll_loop, c, args.rounds) for c in clients]
    deadline = time.time() + args.deadline

    def wait_parked() -> dict:
        while True:  # every client has a poll held by the server
            now = stats()
            if now["parked"] >= args.clients:
                return now
            if time.time() > deadline:
                raise SystemExit("deadline passed waiting for the polls to park")
            gevent.sleep(0.05)

    for round_no in range(args.rounds):
        before = wait_parked()
        fanout = control.post("/broadcast", {})[1]
        target = args.clients * (round_no + 1)
        while sum(len(c["lat"]) for c in clients) < target and time.time() < deadline:
            gevent.sleep(0.01)
        after = wait_parked() if round_no + 1 < args.rounds else stats()
        lat = sorted(c["lat"][round_no] for c in clients if len(c["lat"]) > round_no)
        cycle_us = (after["cpu_s"] - before["cpu_s"]) / max(1, len(lat)) * 1e6
        report["rounds"].append(
            {
                "parked": before["parked"],
                "delivered": len(lat),
                "fanout_ms": round(fanout["fanout_ms"], 1),
                "p50_ms": round(pct(lat, 50), 1),
                "p99_ms": round(pct(lat, 99), 1),
                "max_ms": round(lat[-1], 1),
                "server_rss_mib": round(before["rss_kib"] / 1024, 1),
                "server_cpu_us_per_delivery": round(cycle_us),
            }
        )
    gevent.joinall(workers, timeout=max(1, deadline - time.time()))
    every = sorted(x for c in clients for x in c["lat"])
    report["all"] = {
        "samples": len(every),
        "p50_ms": round(pct(every, 50), 1),
        "p99_ms": round(pct(every, 99), 1),
    }
    report["server_rss_mib_end"] = round(stats()["rss_kib"] / 1024, 1)
    report["client_rss_mib"] = round(rss_kib() / 1024, 1)
    print(json.dumps(report), flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# -- the orchestrator -----------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="run", choices=["run", "server", "client"])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--layer",
        choices=["memory", "redis", "redis-nockpt"],
        default="memory",
        help="the server's layer: in memory, or one Redis with or without session checkpoints",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds, whole run")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for an idle machine before measuring",
    )
    args = parser.parse_args()
    if args.role == "server":
        run_server(args)
        return 0
    if args.role == "client":
        run_client(args)
        return 0
    me = [sys.executable, os.path.abspath(__file__)]
    busy = wait_for_quiet(args.quiet_wait)
    server = subprocess.Popen(
        me
        + ["server", "--clients", str(args.clients), "--layer", args.layer, "--redis", args.redis],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline().split()[1])
        idle = rss_kib(server.pid)
        client = subprocess.run(
            me
            + [
                "client",
                "--port",
                str(port),
                "--clients",
                str(args.clients),
                "--rounds",
                str(args.rounds),
                "--deadline",
                str(args.deadline),
            ],
            capture_output=True,
            text=True,
            timeout=args.deadline + 60,
        )
        if client.returncode != 0:
            print(client.stderr, file=sys.stderr)
            return 1
        report = json.loads(client.stdout.strip().splitlines()[-1])
        report["server_rss_mib_idle"] = round(idle / 1024, 1)
        report["machine_busy_before"] = round(busy, 2)  # other processes' share of the cores
        report["load_average"] = os.getloadavg()[0]
        print(json.dumps(report, indent=2))
        return 0
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
