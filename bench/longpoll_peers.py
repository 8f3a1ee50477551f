"""Long-poll broadcast, side by side: wsbridge against python-socketio's polling transport.

    .venv/bin/python bench/longpoll_peers.py [--clients 5000] [--messages 20] [--bursts 3]
                                             [--repeat 3]

Issue 18's target: wsbridge delivers at least 2x python-socketio's messages/s
with an equal or better p99, both serving N long-poll clients on this machine,
driven by the same load client, in the same run.

What each target runs (one process each, pinned to core 0 with ``taskset -c 0``;
started fresh for every repetition):

``wsbridge``
    the project's ``.venv``: ``wrap(site, router=..., longpoll={"poll_timeout":
    120, "session_timeout": 300})`` on wsbridge's own pywsgi server
    (``gevent.pywsgi.WSGIServer`` with ``wsbridge.transport.servers.pywsgi.
    handler_class()`` and the default ``ServerTimeouts``, backlog 4096), the
    in-memory layer (the default), one ``WebsocketConsumer`` per long-poll
    session with ``groups = ["bench"]`` whose ``bench_msg`` handler does
    ``self.send(text_data=event["text"])``. A burst is ``get_channel_layer().
    group_send("bench", {"type": "bench.msg", "text": json.dumps(msg)})``.
    Default limits (the client spreads its sessions over source addresses, at
    most ``--per-addr`` 250 each, below the per-IP limits).
``socketio``
    ``bench/.venvs/socketio`` (python-socketio 5 / python-engineio 4, from
    ``bench/requirements/socketio.txt``): ``socketio.Server(async_mode="gevent",
    transports=["polling"], ping_interval=120, ping_timeout=60)`` with its
    default in-memory client manager, wrapped in ``socketio.WSGIApp(sio, site)``
    on a plain ``gevent.pywsgi.WSGIServer`` (backlog 4096; no WebSocket handler:
    only polling is served). The ``connect`` handler does ``sio.enter_room(sid,
    "bench")``. A burst is ``sio.emit("msg", msg, room="bench")``. The ping
    interval of 120 s matches wsbridge's poll timeout, so neither sends
    keep-alive traffic during a measurement.

In both, ``GET /bench/burst?id=K&n=M`` (a plain WSGI view of the site) spawns
one greenlet that sends M messages back to back, ``gevent.sleep(0)`` between
two, each ``{"b": K, "i": i, "t": time.time()}`` stamped right before its send
call, and answers at once.

The load client (``peer_harness.LoadClient``, gevent, core 1) is the same
code for both: one keep-alive HTTP/1.1 connection per client, bound to
127.0.0.x (x = 2, 3, ...; ``--per-addr`` clients each), and a per-target
wire adapter:

* wsbridge: ``POST /_wsbridge/lp/open {"path": "/ws/bench/"}``, then ``POST
  /_wsbridge/lp/poll {"token", "ack"}`` in a loop (the ack is the last seq seen);
* socketio: the Engine.IO v4 handshake ``GET /socket.io/?EIO=4&transport=polling``,
  the Socket.IO CONNECT packet ``POST 40``, then ``GET ...&sid=`` polls (packets
  split on ``\\x1e``; ``42["msg",{...}]`` counted; a ``2`` ping answered with
  ``POST 3``). The client counts as joined once the ``40`` answer arrives.

Per repetition the two targets run one after the other, the order
alternating. For each: connect all N, wait until the server's CPU is idle
(every poll parked), one warm-up burst of 1 message, then ``--bursts``
measured bursts of ``--messages`` each, waiting for the server to go idle
again (the re-polls taken) after each. Figures:

* delivered msgs/s: deliveries / (last arrival - first send time), per
  burst, summed over the bursts;
* p50 / p99 delivery latency: client arrival time minus the send stamp, over
  every delivery of the measured bursts;
* server CPU per delivery: the server's utime+stime from the trigger until it
  is idle again (answering the polls and taking the next ones) / deliveries;
* CPU steal (``/proc/stat``) per burst and per repetition; a repetition with
  more than 0.1 cores of steal is marked HIGH, and kept;
* the client's CPU over the burst's wall time (at 1.0 the client is the limit).

Bounded: N clients, a fixed number of bursts, repetitions and timeouts
(``--grace`` per burst, ``--connect-timeout``, the client's own hard cap);
loopback only; only the PIDs started here are stopped. Results and logs:
``bench/results/longpoll_peers-<run id>/``.
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

    from wsbridge import Router, WebsocketConsumer, get_channel_layer, wrap
    from wsbridge.transport.limits import ServerTimeouts
    from wsbridge.transport.servers.pywsgi import handler_class

    ph.server_nofile()
    routes = Router()

    class Bench(WebsocketConsumer):
        groups = ["bench"]

        def bench_msg(self, event: dict[str, Any]) -> None:
            self.send(text_data=event["text"])

    class FastlaneBench(WebsocketConsumer):  # --fastlane: the same, declared
        groups = ["bench"]
        fastlane = {"bench.msg": "text"}

    fast = os.environ.get("BENCH_FASTLANE") == "1"
    routes.websocket("ws/bench/")(FastlaneBench if fast else Bench)

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

    application = wrap(
        site,
        router=routes,
        secret="bench-secret-0123456789",
        longpoll={"poll_timeout": 120, "session_timeout": 300},
    )
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


def serve_socketio(args: argparse.Namespace) -> None:
    import gevent
    import socketio
    from gevent import pywsgi

    ph.server_nofile()
    sio = socketio.Server(
        async_mode="gevent",
        transports=["polling"],
        ping_interval=120,
        ping_timeout=60,
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        sio.enter_room(sid, "bench")

    def burst(bid: int, n: int) -> None:
        for i in range(n):
            sio.emit("msg", ph.message(bid, i), room="bench")
            if not args.atomic:
                gevent.sleep(0)

    def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == BURST_PATH:
            bid, n = ph.parse_burst_query(environ.get("QUERY_STRING", ""))
            gevent.spawn(burst, bid, n)
            return ph.json_response(start_response, {"ok": True})
        return ph.json_response(start_response, {})

    server = pywsgi.WSGIServer(
        ("127.0.0.1", args.port), socketio.WSGIApp(sio, site), log=None, backlog=4096
    )
    server.serve_forever()


SERVERS = {"wsbridge": serve_wsbridge, "socketio": serve_socketio}


# ========================================================= client adapters ==


class WsbridgeLongPoll(ph.Adapter):
    """wsbridge's long-poll wire: open, then poll with the last seq as the ack."""

    name = "wsbridge"

    def run(self, index: int, conn: ph.HttpConn, client: ph.LoadClient) -> None:
        lp = "/_wsbridge/lp/"
        for _attempt in range(10):
            status, headers, body = conn.request(
                "POST", lp + "open", b'{"path": "/ws/bench/"}', "application/json"
            )
            if status != 429:
                break
            client.error("open 429 (retried)")
            import gevent

            gevent.sleep(float(headers.get("retry-after", "1")))
        if status != 200:
            raise ph.HttpError(f"open answered {status}: {body[:100]!r}")
        token = json.loads(body)["token"]
        client.ready()
        seen = 0
        loads = json.loads
        while not client.stopping:
            status, _, body = conn.request(
                "POST",
                lp + "poll",
                json.dumps({"token": token, "ack": seen}).encode(),
                "application/json",
            )
            arrived = time.time()
            if status != 200:
                raise ph.HttpError(f"poll answered {status}: {body[:100]!r}")
            answer = loads(body)
            out = []
            for m in answer.get("messages", ()):
                seq = m.get("seq", 0)
                if seq <= seen:
                    continue
                seen = seq
                text = m.get("text")
                if text and text[0] == "{":
                    out.append(loads(text))
            if out:
                client.deliver(out, arrived)
            if answer.get("closed") or answer.get("close"):
                raise ph.HttpError(f"session closed: {answer}")


class SocketioPolling(ph.Adapter):
    """Engine.IO v4 long-polling with the Socket.IO v5 packets on top."""

    name = "socketio"

    def run(self, index: int, conn: ph.HttpConn, client: ph.LoadClient) -> None:
        base = "/socket.io/?EIO=4&transport=polling"
        status, _, body = conn.request("GET", base)
        text = body.decode()
        if status != 200 or not text.startswith("0"):
            raise ph.HttpError(f"handshake answered {status}: {text[:100]!r}")
        sid = json.loads(text[1:])["sid"]
        path = f"{base}&sid={sid}"
        status, _, body = conn.request("POST", path, b"40", "text/plain;charset=UTF-8")
        if status != 200:
            raise ph.HttpError(f"CONNECT answered {status}: {body[:100]!r}")
        joined = False
        loads = json.loads
        while not client.stopping:
            status, _, body = conn.request("GET", path)
            arrived = time.time()
            if status != 200:
                raise ph.HttpError(f"poll answered {status}: {body[:100]!r}")
            out = []
            ping = False
            for packet in body.decode().split("\x1e"):
                if packet.startswith("42"):
                    event = loads(packet[2:])
                    if event[0] == "msg":
                        out.append(event[1])
                elif packet == "2":
                    ping = True
                elif packet.startswith("40"):
                    if not joined:
                        joined = True
                        client.ready()
                elif packet == "1" or packet.startswith("41") or packet.startswith("44"):
                    raise ph.HttpError(f"closed by the server: {packet[:100]!r}")
            if out:
                client.deliver(out, arrived)
            if ping:
                conn.request("POST", path, b"3", "text/plain;charset=UTF-8")


ADAPTERS = {"wsbridge": WsbridgeLongPoll, "socketio": SocketioPolling}


# ============================================================ orchestrator ==


def targets(
    python_socketio: str, baseline: str | None = None, fastlane: bool = False
) -> list[ph.Target]:
    me = os.path.abspath(__file__)
    found = [
        ph.Target("wsbridge", [sys.executable, me, "server", "--server", "wsbridge"], "wsbridge"),
        ph.Target("socketio", [python_socketio, me, "server", "--server", "socketio"], "socketio"),
    ]
    if baseline:  # wsbridge imported from an earlier checkout: a change before and after
        command = [sys.executable, me, "server", "--server", "wsbridge"]
        env = {"PYTHONPATH": os.path.abspath(baseline)}
        found.append(ph.Target("wsbridge-baseline", command, "wsbridge", env))
    if fastlane:  # the consumer's handler declared as a fastlane instead
        command = [sys.executable, me, "server", "--server", "wsbridge"]
        found.append(ph.Target("wsbridge-fastlane", command, "wsbridge", {"BENCH_FASTLANE": "1"}))
    return found


def ratio(ws: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    msgs = ws["msgs_per_s"] / peer["msgs_per_s"] if peer.get("msgs_per_s") else None
    p99 = ws["p99_ms"] / peer["p99_ms"] if peer.get("p99_ms") else None
    return {
        "msgs_per_s": round(msgs, 2) if msgs else None,
        "p99": round(p99, 2) if p99 else None,
        "cpu": round(ws["cpu_us_per_delivery"] / peer["cpu_us_per_delivery"], 2),
        "met": bool(msgs and p99 and msgs >= 2.0 and p99 <= 1.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="run", choices=["run", "server", "client"])
    parser.add_argument("--server", choices=sorted(SERVERS))
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=20, help="messages per burst")
    parser.add_argument("--bursts", type=int, default=3, help="measured bursts per target")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--show", metavar="RESULTS_JSON", help="print a past run's table, exit")
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also measure wsbridge imported from DIR (a `git worktree add DIR <commit>`)",
    )
    parser.add_argument(
        "--fastlane",
        action="store_true",
        help="also measure wsbridge with the consumer's handler declared as a fastlane",
    )
    ph.add_client_arguments(parser)
    args = parser.parse_args()
    if args.show:
        with open(args.show) as f:
            ph.print_report(
                json.load(f), ["wsbridge", "socketio"], ["msgs_per_s", "p99", "cpu", "met"]
            )
        return 0
    if args.role == "server":
        SERVERS[args.server](args)
        return 0
    if args.role == "client":
        ph.run_client(args, ADAPTERS[args.adapter]())
        return 0
    from benchlib.venvs import ensure_venv

    python_socketio = str(ensure_venv("socketio"))
    client_cmd = [sys.executable, os.path.abspath(__file__), "client"]
    report = ph.run_peers(
        bench="longpoll_peers",
        targets=targets(python_socketio, args.baseline_src, args.fastlane),
        client_cmd=client_cmd,
        args=args,
        ratio=ratio,
    )
    ph.print_report(report, ["wsbridge", "socketio"], ["msgs_per_s", "p99", "cpu", "met"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
