"""A reconnect storm: N clients at once, each ``behind`` messages behind, all recovering.

    nice -n 5 .venv/bin/python bench/recovery_storm.py [--clients 1000] [--behind 100]
        [--repeat 1] [--redis redis://127.0.0.1:6379/0] [--client-procs 1]

Per round: starts ``wsbridge serve bench.servers.recovery_app:application``
(Redis layer at ``--redis``, a fresh random key prefix, group ``storm.h`` with
200 messages of history), publishes ``behind`` messages to ``storm.h`` from
this process (its own RedisLayer), takes ``since`` = the position just before
the oldest, then a gevent client process (raw sockets, source 127.0.0.1)
opens all N WebSockets at once at
``/ws/storm/?wsbridge_recover={"storm.h": since}``. A client has recovered
when it holds the notice with ``recovered: true`` and all ``behind`` texts, in
order, exactly once (frames still arriving during a 1 s grace after the last
one count as extras). Prints, per round, the seconds from the first connect
to the last client recovered, p50/p99 per-client time to recovered, the CPU
seconds of the server process, Redis (INFO cpu) and the client process(es)
during the storm, the CPU steal ticks and the load average, plus any non-101
answers (429s) and errors. A fresh server per round; the run's keys are
deleted at the end. Bounded in time; stops what it started.
Not a test: no assertion, figures go to the report.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import server_env, start_wsbridge_serve  # noqa: E402

APP = "bench.servers.recovery_app:application"
GROUP = "storm.h"
GROUPS = {"storm.*": {"history": 200}}

CLIENT = r"""
import gevent.monkey; gevent.monkey.patch_all()
import json, os, resource, socket, sys, time, gevent, gevent.event
sys.path.insert(0, sys.argv[1])
from tests.transport.wsclient import frame as ws_frame, handshake_bytes, read_response, read_frame
port, clients, behind, path, budget = (
    int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6]))
expected = [f"storm-{n}" for n in range(behind)]
records, socks = [], []
all_done = gevent.event.Event()
finished = [0]
deadline = time.monotonic() + budget

def run(i):
    rec = {"t0": time.monotonic(), "status": None, "done": None, "notice": None,
           "texts": [], "extra": 0, "other": 0, "close": None, "error": None}
    records.append(rec)
    try:
        sock = socket.socket(); socks.append(sock)
        sock.settimeout(max(deadline - time.monotonic(), 0.1))
        sock.connect(("127.0.0.1", port))
        rec["t_tcp"] = time.monotonic()
        sock.sendall(handshake_bytes(path, port))
        status, headers, rest = read_response(sock, timeout=max(deadline - time.monotonic(), 0.1))
        rec["status"], rec["t_open"] = status, time.monotonic()
        if status != 101:
            rec["retry_after"] = headers.get("retry-after")
            return
        while True:
            got, rest = read_frame(sock, rest, timeout=max(deadline - time.monotonic(), 0.1))
            op = int(got.opcode)
            if op == 0x8:
                rec["close"] = int.from_bytes(got.data[:2], "big") if len(got.data) >= 2 else 1005
                return
            if op == 0x9:  # the server's keepalive ping: answer, or it closes with 1011
                sock.sendall(ws_frame(0xA, got.data))
                continue
            if op != 0x1:
                continue
            frame = json.loads(got.data)
            stamp = frame.get("wsb") or {}
            if rec["done"] is not None:
                rec["extra"] += 1
            elif "recovered" in stamp:
                if rec["notice"] is not None:
                    rec["extra"] += 1
                rec["notice"] = stamp
            elif "text" in frame:
                rec["texts"].append(frame["text"])
            else:
                rec["other"] += 1
            if (rec["done"] is None and rec["notice"] is not None
                    and len(rec["texts"]) >= behind):
                rec["done"] = time.monotonic()
                finished[0] += 1
                if finished[0] == clients:
                    all_done.set()
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"

cpu0 = resource.getrusage(resource.RUSAGE_SELF)
jobs = [gevent.spawn(run, i) for i in range(clients)]
all_done.wait(max(deadline - time.monotonic(), 0.1))
gevent.sleep(1.0)  # the grace: duplicates or late frames still count as extras
gevent.killall(jobs, timeout=5)
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
for sock in socks:
    try: sock.close()
    except OSError: pass
out = []
for rec in records:
    ok = bool(rec["notice"] and rec["notice"].get("recovered") is True
              and rec["texts"] == expected and rec["extra"] == 0)
    out.append({"ok": ok, "t0": rec["t0"], "done": rec["done"], "t_open": rec.get("t_open"),
                "status": rec["status"], "close": rec["close"], "error": rec["error"],
                "texts": len(rec["texts"]),
                "in_order": rec["texts"] == expected[:len(rec["texts"])],
                "extra": rec["extra"], "other": rec["other"], "retry_after": rec.get("retry_after"),
                "notice": rec["notice"]})
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
print(json.dumps({"records": out, "cpu_s": cpu}))
"""


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants (seconds)."""
    ticks = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo += [int(c) for c in children.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def steal_ticks() -> int:
    """CPU steal so far (clock ticks, all CPUs): the shared VM's noise, read per run."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def one_round(args: argparse.Namespace) -> dict:
    import redis

    from wsbridge.layers.history import Position
    from wsbridge.layers.redis import RedisLayer

    prefix = f"wsbstorm-{secrets.token_hex(6)}-"
    env = server_env(STORM_REDIS_URL=args.redis, STORM_PREFIX=prefix)
    env.pop("WSBRIDGE_LAYER", None)
    plain = redis.Redis.from_url(args.redis)
    server = start_wsbridge_serve(APP, Path(tempfile.mkdtemp(prefix="storm-")), env=env)
    publisher = RedisLayer(hosts=[args.redis], prefix=prefix, groups=GROUPS)
    procs: list[subprocess.Popen] = []
    try:
        for n in range(args.behind):
            publisher.group_send(GROUP, {"type": "storm.msg", "text": f"storm-{n}"})
        first = Position.parse(publisher.history(GROUP).messages[0]["position"])
        since = str(Position(first.epoch, first.offset - 1))
        check = publisher.history(GROUP, since=since)
        path = "/ws/storm/?wsbridge_recover=" + quote(json.dumps({GROUP: since}))

        steal, load_before = steal_ticks(), os.getloadavg()
        server_cpu, redis_cpu = proc_cpu_seconds(server.pid), redis_cpu_seconds(plain)
        shares = [
            args.clients // args.client_procs + (i < args.clients % args.client_procs)
            for i in range(args.client_procs)
        ]
        for share in shares:
            command = [
                sys.executable,
                "-c",
                CLIENT,
                str(ROOT),
                str(server.port),
                str(share),
                str(args.behind),
                path,
                str(args.budget),
            ]
            procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=server_env())
            )
        outputs = [p.communicate(timeout=args.budget + 60)[0] for p in procs]
        server_cpu = proc_cpu_seconds(server.pid) - server_cpu
        redis_cpu = redis_cpu_seconds(plain) - redis_cpu
        steal = steal_ticks() - steal
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        publisher.close()
        server.stop()
        deleted = 0
        for key in plain.scan_iter(match=prefix + "*", count=1000):
            deleted += plain.delete(key)
        plain.close()

    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    records = [r for result in results for r in result["records"]]
    ok = [r for r in records if r["ok"]]
    start = min(r["t0"] for r in records)
    statuses: dict[str, int] = {}
    closes: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        if r["close"] is not None:
            closes[str(r["close"])] = closes.get(str(r["close"]), 0) + 1
    per_client = [r["done"] - r["t0"] for r in ok]
    opens = [r["t_open"] - r["t0"] for r in records if r["t_open"] is not None]
    notices = [r["notice"] for r in records if r["notice"]]
    log = server.log().splitlines()
    return {
        "clients": args.clients,
        "behind": args.behind,
        "history_check": {"recovered": check.recovered, "messages": len(check.messages)},
        "all_recovered": len(ok) == args.clients,
        "recovered": len(ok),
        "seconds_first_connect_to_last_recovered": (
            round(max(r["done"] for r in ok) - start, 3) if ok else None
        ),
        "per_client_recovered_p50_s": pct(per_client, 0.5),
        "per_client_recovered_p99_s": pct(per_client, 0.99),
        "per_client_recovered_max_s": pct(per_client, 1.0),
        "handshake_p50_s": pct(opens, 0.5),
        "handshake_p99_s": pct(opens, 0.99),
        "server_cpu_s": round(server_cpu, 3),
        "redis_cpu_s": round(redis_cpu, 3),
        "client_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
        "steal_ticks": steal,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "statuses": statuses,
        "closes": closes,
        "missed_in_notice": sorted({n.get("missed") for n in notices}, key=str),
        "not_ok_samples": [r for r in records if not r["ok"]][:3],
        "errors": sorted({r["error"] for r in records if r["error"]})[:5],
        "server_log_warnings": [
            line for line in log if "WARNING" in line or "ERROR" in line or "429" in line
        ][:5],
        "redis_keys_deleted": deleted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--behind", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="rounds, a fresh server each")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds a round may take")
    args = parser.parse_args()
    rounds = [one_round(args) for _ in range(args.repeat)]
    print(json.dumps(rounds[0] if len(rounds) == 1 else {"rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
