"""SSE broadcast, side by side: wsbridge's SseConsumer against a minimal gevent SSE loop.

    .venv/bin/python bench/sse_peers.py [--clients 10000] [--messages 1] [--bursts 3]
                                        [--repeat 3]

Issue 18's target: with N open Server-Sent Events streams and one broadcast,
wsbridge's p99 delivery latency is at most 1.5x the floor's, both on this
machine, driven by the same load client, in the same run.

What each target runs (one process each, pinned to core 0 with ``taskset -c 0``,
started fresh for every repetition; both in the project's ``.venv``, same gevent):

``wsbridge``
    ``wrap(site, router=...)`` on wsbridge's own pywsgi server
    (``gevent.pywsgi.WSGIServer`` with ``wsbridge.transport.servers.pywsgi.
    handler_class()`` and the default ``ServerTimeouts``, backlog 4096), the
    in-memory layer (the default), ``GET /sse/`` routed with
    ``@routes.http("sse/")`` to an ``SseConsumer`` with ``groups = ["bench"]``
    and ``keepalive_interval = None`` (the floor sends no keep-alives either)
    whose ``bench_msg`` handler does ``self.send_event(event["text"])``. A
    broadcast is ``get_channel_layer().group_send("bench", {"type": "bench.msg",
    "text": json.dumps(msg)})``. Default limits (the client spreads its streams
    over source addresses, at most ``--per-addr`` 250 each, below the per-IP
    limits).
``floor``
    the least a gevent SSE server can do: a plain ``gevent.pywsgi.WSGIServer``
    (backlog 4096) whose app answers ``GET /sse/`` with ``text/event-stream``
    and a generator that yields ``:\\n\\n`` and then ``queue.get()`` forever, one
    ``gevent.queue.Queue`` per stream in a set; a broadcast formats
    ``data: <json>\\n\\n`` once and puts it into every queue.

In both, ``GET /bench/burst?id=K&n=M`` (a plain WSGI view) spawns one greenlet
that sends M broadcasts (``gevent.sleep(0)`` between two), each ``{"b": K,
"i": i, "t": time.time()}`` stamped right before its send call, and answers
at once. The default is one message per burst: "one broadcast".

The load client (``peer_harness.LoadClient``, gevent, core 1) is the same for
both, adapter included: one connection per stream bound to 127.0.0.x (x = 2,
3, ...; ``--per-addr`` streams each), ``GET /sse/``, then the chunked body
decoded and split into events on blank lines; ``data:`` lines holding the
JSON are counted. A stream counts as open once its first comment arrives.

Per repetition the two targets run one after the other, the order
alternating. For each: open all N streams, wait until the server's CPU is
idle, one warm-up broadcast, then ``--bursts`` measured ones, each followed
by a wait for the server to go idle. Figures: delivered msgs/s (deliveries /
(last arrival - send time)), p50/p99 latency over every delivery of the
measured bursts, server CPU per delivery (trigger to idle), CPU steal
(``/proc/stat``) per burst and per repetition (more than 0.1 cores: marked
HIGH, kept), the client's CPU over each burst's wall time.

Bounded: N streams, fixed bursts, repetitions and timeouts; loopback only;
only the PIDs started here are stopped. Results and logs:
``bench/results/sse_peers-<run id>/``.
"""

from __future__ import annotations

import sys

if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import peer_harness as ph  # noqa: E402

BURST_PATH = "/bench/burst"


# ================================================================ servers ==


def serve_wsbridge(args: argparse.Namespace) -> None:
    import gevent
    from gevent import pywsgi

    from wsbridge import Router, SseConsumer, get_channel_layer, wrap
    from wsbridge.transport.limits import ServerTimeouts
    from wsbridge.transport.servers.pywsgi import handler_class

    ph.server_nofile()
    routes = Router()

    @routes.http("sse/")
    class Stream(SseConsumer):
        groups = ["bench"]
        keepalive_interval = None

        def bench_msg(self, event: dict[str, Any]) -> None:
            self.send_event(event["text"])

    def burst(bid: int, n: int) -> None:
        layer = get_channel_layer()
        for i in range(n):
            layer.group_send("bench", {"type": "bench.msg", "text": json.dumps(ph.message(bid, i))})
            if not args.atomic:
                gevent.sleep(0)

    def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == BURST_PATH:
            bid, n = ph.parse_burst_query(environ.get("QUERY_STRING", ""))
            gevent.spawn(burst, bid, n)
            return ph.json_response(start_response, {"ok": True})
        return ph.json_response(start_response, {})

    application = wrap(site, router=routes, secret="bench-secret-0123456789")
    server = pywsgi.WSGIServer(
        ("127.0.0.1", args.port),
        application,
        handler_class=handler_class(),
        log=None,
        backlog=4096,
    )
    server.wsbridge_timeouts = ServerTimeouts()  # what make_server() sets
    from wsbridge.runtime import tune_gc

    tune_gc()  # what `wsbridge serve` does with the loaded app, by this version's default
    server.serve_forever()


def serve_floor(args: argparse.Namespace) -> None:
    import gevent
    from gevent import pywsgi
    from gevent.queue import Queue

    ph.server_nofile()
    streams: set[Queue] = set()

    def burst(bid: int, n: int) -> None:
        for i in range(n):
            payload = b"data: " + json.dumps(ph.message(bid, i)).encode() + b"\n\n"
            for q in list(streams):
                q.put(payload)
            if not args.atomic:
                gevent.sleep(0)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if path == "/sse/":
            q: Queue = Queue()
            streams.add(q)
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/event-stream; charset=utf-8"),
                    ("Cache-Control", "no-cache"),
                ],
            )

            def stream() -> Any:
                try:
                    yield b":\n\n"
                    while True:
                        yield q.get()
                finally:
                    streams.discard(q)

            return stream()
        if path == BURST_PATH:
            bid, n = ph.parse_burst_query(environ.get("QUERY_STRING", ""))
            gevent.spawn(burst, bid, n)
            return ph.json_response(start_response, {"ok": True})
        return ph.json_response(start_response, {})

    server = pywsgi.WSGIServer(("127.0.0.1", args.port), app, log=None, backlog=4096)
    server.serve_forever()


SERVERS = {"wsbridge": serve_wsbridge, "floor": serve_floor}


# ========================================================== client adapter ==


class SseStream(ph.Adapter):
    """One ``text/event-stream``: open, then count the JSON ``data:`` events."""

    name = "sse"

    def run(self, index: int, conn: ph.HttpConn, client: ph.LoadClient) -> None:
        conn.send("GET", "/sse/")
        status, headers = conn.head()
        if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
            raise ph.HttpError(f"/sse/ answered {status} {headers}")
        buf = b""
        opened = False
        loads = json.loads
        for piece in conn.chunks():
            arrived = time.time()
            buf += piece
            if b"\n\n" not in buf:
                continue
            *events, buf = buf.split(b"\n\n")
            out = []
            for event in events:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        data = line[5:].lstrip(b" ")
                        if data[:1] == b"{":
                            out.append(loads(data))
            if not opened:
                opened = True
                client.ready()
            if out:
                client.deliver(out, arrived)
            if client.stopping:
                return
        if not client.stopping:
            raise ph.HttpError("the stream ended")


# ============================================================ orchestrator ==


def targets(baseline: str | None = None) -> list[ph.Target]:
    me = os.path.abspath(__file__)
    found = [
        ph.Target("wsbridge", [sys.executable, me, "server", "--server", "wsbridge"], "sse"),
        ph.Target("floor", [sys.executable, me, "server", "--server", "floor"], "sse"),
    ]
    if baseline:  # wsbridge imported from an earlier checkout: a change before and after
        command = [sys.executable, me, "server", "--server", "wsbridge"]
        env = {"PYTHONPATH": os.path.abspath(baseline)}
        found.append(ph.Target("wsbridge-baseline", command, "sse", env))
    return found


def ratio(ws: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    p99 = ws["p99_ms"] / floor["p99_ms"] if floor.get("p99_ms") else None
    p50 = ws["p50_ms"] / floor["p50_ms"] if floor.get("p50_ms") else None
    msgs = ws["msgs_per_s"] / floor["msgs_per_s"] if floor.get("msgs_per_s") else None
    return {
        "p99": round(p99, 2) if p99 else None,
        "p50": round(p50, 2) if p50 else None,
        "msgs_per_s": round(msgs, 2) if msgs else None,
        "cpu": round(ws["cpu_us_per_delivery"] / floor["cpu_us_per_delivery"], 2),
        "met": bool(p99 and p99 <= 1.5),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="run", choices=["run", "server", "client"])
    parser.add_argument("--server", choices=sorted(SERVERS))
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--messages", type=int, default=1, help="broadcasts per burst")
    parser.add_argument("--bursts", type=int, default=3, help="measured bursts per target")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--show", metavar="RESULTS_JSON", help="print a past run's table, exit")
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also measure wsbridge imported from DIR (a `git worktree add DIR <commit>`)",
    )
    ph.add_client_arguments(parser)
    args = parser.parse_args()
    if args.show:
        with open(args.show) as f:
            ph.print_report(
                json.load(f), ["wsbridge", "floor"], ["p99", "p50", "msgs_per_s", "cpu", "met"]
            )
        return 0
    if args.role == "server":
        SERVERS[args.server](args)
        return 0
    if args.role == "client":
        ph.run_client(args, SseStream())
        return 0
    client_cmd = [sys.executable, os.path.abspath(__file__), "client"]
    report = ph.run_peers(
        bench="sse_peers",
        targets=targets(args.baseline_src),
        client_cmd=client_cmd,
        args=args,
        ratio=ratio,
    )
    ph.print_report(report, ["wsbridge", "floor"], ["p99", "p50", "msgs_per_s", "cpu", "met"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
