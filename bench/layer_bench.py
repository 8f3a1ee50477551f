"""Channel layer benchmark: wsbridge's Redis layer side by side with channels_redis 4.x.

    .venv/bin/python bench/layer_bench.py [--redis redis://127.0.0.1:6379/0] [--quick]

Measures, on the same Redis, each side in its own process (gevent for
wsbridge, asyncio for channels_redis):

1. messages/s for one process: a named channel (send then receive, one
   at a time; and a burst of sends then receives) and a process-specific
   channel (wsbridge: attach() push delivery; channels_redis: receive());
2. group_send latency to 1,000 and 10,000 members spread over 2 processes:
   the sender's call time (median of several sends) and, for wsbridge, the
   time until every member in both member processes has the message.

Every run uses a fresh key prefix and deletes its keys; nothing is flushed.
Not a test: figures go in reports, never in assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
MESSAGE_TEXT = "x" * 100


# -- helpers ------------------------------------------------------------------------------


def run_role(*args: str, timeout: float = 600) -> dict[str, Any]:
    """Run this file in a subprocess with ``--role ...``; return the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, str(HERE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])
    client.close()


def fake_members(count: int, processes: list[str]) -> list[str]:
    """Specific channel names spread evenly over ``processes``."""
    return [f"specific.{processes[i % len(processes)]}!{i:08x}" for i in range(count)]


# -- wsbridge side (gevent) ----------------------------------------------------------------


def wsb_layer(url: str, prefix: str, **options: Any) -> Any:
    from wsbridge.layers.redis import RedisLayer

    return RedisLayer(
        hosts=[url], prefix=prefix, capacity=100_000, process_capacity=100_000, **options
    )


def wsb_throughput(url: str, n: int) -> dict[str, Any]:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.event import Event

    prefix = "bench" + secrets.token_hex(4)
    layer = wsb_layer(url, prefix)
    out: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        for i in range(n):
            layer.send("bench.q", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
            layer.receive("bench.q", timeout=5)
        out["named_pairs"] = n / (time.perf_counter() - started)

        started = time.perf_counter()
        for i in range(n):
            layer.send("bench.q", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
        for _ in range(n):
            layer.receive("bench.q", timeout=5)
        out["named_burst"] = n / (time.perf_counter() - started)

        channel = layer.new_channel()
        done = Event()
        count = [0]

        def callback(message: dict[str, Any]) -> None:
            count[0] += 1
            if count[0] == n:
                done.set()

        layer.attach(channel, callback)
        gevent.sleep(0.1)
        started = time.perf_counter()
        for i in range(n):
            layer.send(channel, {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
        done.wait(60)
        out["specific_burst"] = n / (time.perf_counter() - started)
    finally:
        layer.close()
        cleanup(url, prefix)
    return out


def wsb_group_latency(url: str, members: int, rounds: int) -> dict[str, Any]:
    """Sender-side group_send time with ``members`` fake members over 2 processes."""
    from gevent import monkey

    monkey.patch_all()
    prefix = "bench" + secrets.token_hex(4)
    layer = wsb_layer(url, prefix)
    try:
        for name in fake_members(members, ["aaaa0001", "bbbb0002"]):
            layer.group_add("bench.group", name)
        times = []
        for i in range(rounds):
            started = time.perf_counter()
            layer.group_send("bench.group", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
            times.append(time.perf_counter() - started)
    finally:
        layer.close()
        cleanup(url, prefix)
    return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000}


def wsb_member(url: str, prefix: str, count: int, rounds: int) -> None:
    """A member process: attach ``count`` channels to the group, report each completed round."""
    from gevent import monkey

    monkey.patch_all()
    from gevent.event import Event

    layer = wsb_layer(url, prefix)
    got: dict[int, int] = {}
    finished: dict[int, float] = {}
    all_done = Event()

    def callback(message: dict[str, Any]) -> None:
        i = message["i"]
        got[i] = got.get(i, 0) + 1
        if got[i] == count:
            finished[i] = time.time()
            if len(finished) == rounds:
                all_done.set()

    for _ in range(count):
        channel = layer.new_channel()
        layer.attach(channel, callback)
        layer.group_add("bench.e2e", channel)
    print("READY", flush=True)
    all_done.wait(120)
    layer.close()
    print(json.dumps({str(k): v for k, v in finished.items()}), flush=True)


def wsb_group_e2e(url: str, members: int, rounds: int) -> dict[str, Any]:
    """group_send from here to 2 real member processes; time until every member has it."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    prefix = "bench" + secrets.token_hex(4)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "--role",
                "wsb-member",
                "--redis",
                url,
                "--prefix",
                prefix,
                "--count",
                str(members // 2),
                "--rounds",
                str(rounds),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    layer = wsb_layer(url, prefix)
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "READY"
        sent: dict[int, float] = {}
        call_times = []
        for i in range(rounds):
            sent[i] = time.time()
            started = time.perf_counter()
            layer.group_send("bench.e2e", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
            call_times.append(time.perf_counter() - started)
            gevent.sleep(0.2)  # let a round finish so rounds do not queue behind each other
        results = [json.loads(proc.stdout.readline()) for proc in procs]
        for proc in procs:
            proc.wait(30)
        e2e = [
            max(r[str(i)] for r in results) - sent[i]
            for i in range(rounds)
            if all(str(i) in r for r in results)
        ]
    finally:
        layer.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        cleanup(url, prefix)
    return {
        "call_median_ms": statistics.median(call_times) * 1000,
        "e2e_median_ms": statistics.median(e2e) * 1000 if e2e else None,
        "complete_rounds": len(e2e),
    }


# -- channels_redis side (asyncio) -----------------------------------------------------------


def cr_layer(url: str, prefix: str) -> Any:
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(hosts=[url], prefix=prefix, capacity=100_000)


def cr_throughput(url: str, n: int) -> dict[str, Any]:
    import asyncio

    async def main() -> dict[str, Any]:
        prefix = "bench" + secrets.token_hex(4)
        layer = cr_layer(url, prefix)
        out: dict[str, Any] = {}
        try:
            started = time.perf_counter()
            for i in range(n):
                await layer.send("bench.q", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
                await layer.receive("bench.q")
            out["named_pairs"] = n / (time.perf_counter() - started)

            started = time.perf_counter()
            for i in range(n):
                await layer.send("bench.q", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
            for _ in range(n):
                await layer.receive("bench.q")
            out["named_burst"] = n / (time.perf_counter() - started)

            channel = await layer.new_channel()
            started = time.perf_counter()
            for i in range(n):
                await layer.send(channel, {"type": "bench.message", "text": MESSAGE_TEXT, "i": i})
            for _ in range(n):
                await layer.receive(channel)
            out["specific_burst"] = n / (time.perf_counter() - started)
        finally:
            await layer.flush()
        return out

    return asyncio.run(main())


def cr_group_latency(url: str, members: int, rounds: int) -> dict[str, Any]:
    import asyncio

    async def main() -> dict[str, Any]:
        prefix = "bench" + secrets.token_hex(4)
        layer = cr_layer(url, prefix)
        try:
            for name in fake_members(members, ["aaaa0001", "bbbb0002"]):
                await layer.group_add("bench.group", name)
            times = []
            for i in range(rounds):
                started = time.perf_counter()
                await layer.group_send(
                    "bench.group", {"type": "bench.message", "text": MESSAGE_TEXT, "i": i}
                )
                times.append(time.perf_counter() - started)
        finally:
            await layer.flush()
        return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000}

    return asyncio.run(main())


# -- orchestration ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    roles = {
        "wsb-throughput": lambda: wsb_throughput(args.redis, args.n),
        "cr-throughput": lambda: cr_throughput(args.redis, args.n),
        "wsb-group": lambda: wsb_group_latency(args.redis, args.count, args.rounds),
        "cr-group": lambda: cr_group_latency(args.redis, args.count, args.rounds),
        "wsb-e2e": lambda: wsb_group_e2e(args.redis, args.count, args.rounds),
    }
    if args.role == "wsb-member":
        wsb_member(args.redis, args.prefix, args.count, args.rounds)
        return 0
    if args.role:
        print(json.dumps(roles[args.role]()))
        return 0

    n = 2000 if args.quick else 10_000
    rounds = 5 if args.quick else 10
    print(f"Redis {args.redis}; {n} messages of ~130 bytes; group rounds {rounds}")
    wsb = run_role("--role", "wsb-throughput", "--redis", args.redis, "-n", str(n))
    cr = run_role("--role", "cr-throughput", "--redis", args.redis, "-n", str(n))
    report: dict[str, Any] = {
        "messages": n,
        "throughput": {"wsbridge": wsb, "channels_redis": cr},
        "group_send": {},
    }
    print("\nmessages/s, one process          wsbridge   channels_redis   ratio")
    for key, label in [
        ("named_pairs", "named channel, send+receive"),
        ("named_burst", "named channel, burst"),
        ("specific_burst", "specific channel, burst"),
    ]:
        print(f"  {label:<31} {wsb[key]:>8.0f}   {cr[key]:>14.0f}   {wsb[key] / cr[key]:>5.1f}x")
    print("\ngroup_send, members over 2 processes (ms)")
    print("  members   wsbridge call   channels_redis call   wsbridge end-to-end (2 processes)")
    for members in (1000, 10_000):
        common = ["--redis", args.redis, "--count", str(members), "--rounds", str(rounds)]
        w = run_role("--role", "wsb-group", *common)
        c = run_role("--role", "cr-group", *common)
        e = run_role("--role", "wsb-e2e", *common)
        report["group_send"][str(members)] = {"wsbridge": w, "channels_redis": c, "wsbridge_e2e": e}
        e2e = f"{e['e2e_median_ms']:.1f}" if e["e2e_median_ms"] is not None else "n/a"
        print(
            f"  {members:>7}   {w['median_ms']:>13.2f}   {c['median_ms']:>19.2f}   "
            f"{e2e} (call {e['call_median_ms']:.2f}, {e['complete_rounds']}/{rounds} rounds)"
        )
    # Last line: the whole report as JSON, for bench/run.py.
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
