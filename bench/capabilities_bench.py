"""History and presence benchmark: the costs named in docs/topics/recovery.rst and presence.rst.

    .venv/bin/python bench/capabilities_bench.py [--redis redis://127.0.0.1:6379/0] [--quick]

Side by side in one run, on the same Redis, each figure a ratio or a count:

1. ``group_send`` call time to a history group vs a plain group (Redis layer
   and memory layer), 10 local members, blocks interleaved so drift hits both;
2. fan-out to 3,000 members in this process with history on vs off: share
   delivered and p50/p99 of the time until the last member has it;
   then 1,000 channels asking at once to recover 100 missed messages each
   (layer level: the time until all have them, this process's and Redis's CPU;
   Redis's is the shared server's, an upper bound);
3. ``presence()`` of a 10,000-entry group: its time and the Redis commands it
   took (``INFO commandstats`` delta of HGETALL; the shared server may see
   other clients, so the delta is an upper bound);
4. presence churn: 2 processes x 500 track/untrack per second for
   ``--seconds`` seconds over 20 users shared between them; an observer in
   this process counts join/leave events, compared with what the changes
   reported (each track/untrack says whether it made a join/leave).

Every run uses a fresh key prefix and deletes its keys; nothing is flushed.
Bounded in count and time. Not a test: figures go in reports, never in assertions.
"""

# ruff: noqa: E402  (gevent is patched before anything else is imported)
from __future__ import annotations

# Patched as a server is (wsbridge serve, gunicorn -k gevent): the Redis pool's
# waits must yield to other greenlets, or 1,000 concurrent callers deadlock it.
from gevent import monkey

monkey.patch_all()

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent

from wsbridge.layers.history import Position

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

HISTORY = {
    "hist": {"history": 100, "history_ttl": 600},
    "churn.*": {"presence": True},
    "big.*": {"presence": False},
    "fan.h": {"history": 100},
}


def cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])
    client.close()


def redis_layer(url: str, prefix: str, **options: Any) -> Any:
    from wsbridge.layers.redis import RedisLayer

    return RedisLayer(hosts=[url], prefix=prefix, groups=HISTORY, **options)


# -- 1. group_send: history vs plain -------------------------------------------------------


def send_cost(layer: Any, blocks: int, per_block: int) -> dict[str, Any]:
    for group in ("hist", "plain"):
        for _ in range(10):
            channel = layer.new_channel()
            layer.attach(channel, lambda m: None)
            layer.group_add(group, channel)
    message = {"type": "bench.msg", "text": "x" * 100}
    times: dict[str, list[float]] = {"hist": [], "plain": []}
    for _ in range(blocks):
        for group in ("plain", "hist"):
            start = time.perf_counter()
            for _ in range(per_block):
                layer.group_send(group, message)
            times[group].append((time.perf_counter() - start) / per_block * 1e6)
            gevent.sleep(0)  # let the reader drain the inbox between blocks
    plain = statistics.median(times["plain"])
    hist = statistics.median(times["hist"])
    return {
        "plain_us": round(plain, 1),
        "history_us": round(hist, 1),
        "ratio": round(hist / plain, 3),
    }


# -- 2. fan-out to 3,000 with history on / off ------------------------------------------------


def fanout(layer: Any, members: int, rounds: int) -> dict[str, Any]:
    """Rounds alternate between the two groups, so the machine's drift hits both."""
    groups = {"plain": "fan.p", "history": "fan.h"}
    state: dict[str, dict[str, Any]] = {}
    for label, group in groups.items():
        box: dict[str, Any] = {"n": 0, "done": gevent.event.Event(), "lat": [], "got": 0}

        def callback(message: dict[str, Any], box: dict[str, Any] = box) -> None:
            box["n"] += 1
            if box["n"] == members:
                box["done"].set()

        for _ in range(members):
            channel = layer.new_channel()
            layer.attach(channel, callback)
            layer.group_add(group, channel)
        state[label] = box
    for _ in range(rounds):
        for label, group in groups.items():
            box = state[label]
            box["n"] = 0
            box["done"].clear()
            start = time.perf_counter()
            layer.group_send(group, {"type": "bench.fan", "text": "x" * 100})
            box["done"].wait(10)
            box["lat"].append((time.perf_counter() - start) * 1000)
            box["got"] += box["n"]
    results: dict[str, Any] = {}
    for label, box in state.items():
        latencies = sorted(box["lat"])
        results[label] = {
            "delivered_pct": round(100 * box["got"] / (members * rounds), 2),
            "p50_ms": round(latencies[len(latencies) // 2], 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        }
    results["p99_ratio"] = round(results["history"]["p99_ms"] / results["plain"]["p99_ms"], 3)
    return results


# -- 2b. 1,000 reconnecting at once, each 100 messages behind -------------------------------------


def reconnect_storm(url: str, prefix: str, clients: int, behind: int) -> dict[str, Any]:
    """Layer level: ``clients`` channels recover ``behind`` missed messages each, at once."""
    import resource

    import redis

    publisher = redis_layer(url, prefix)
    layer = redis_layer(url, prefix)
    group = "fan.h"
    for i in range(behind):
        publisher.group_send(group, {"type": "bench.msg", "n": i, "text": "x" * 100})
    first = Position.parse(publisher.history(group).messages[0]["position"])
    assert first is not None
    since = str(Position(first.epoch, first.offset - 1))  # just before the oldest kept
    client = redis.Redis.from_url(url)
    cpu = client.info("cpu")
    redis_before = cpu["used_cpu_sys"] + cpu["used_cpu_user"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    self_before = usage.ru_utime + usage.ru_stime
    counts = {"done": 0}
    start = time.perf_counter()

    def one() -> None:
        got = {"n": 0}

        def callback(message: dict[str, Any]) -> None:
            got["n"] += 1

        channel = layer.new_channel()
        layer.attach(channel, callback)
        layer.request_recovery(channel, {group: since})
        layer.group_add(group, channel)
        if got["n"] == behind + 1:  # the notice + every missed message
            counts["done"] += 1

    greenlets = [gevent.spawn(one) for _ in range(clients)]
    gevent.joinall(greenlets, timeout=120)
    took = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = client.info("cpu")
    client.close()
    publisher.close()
    layer.close()
    return {
        "clients": clients,
        "behind": behind,
        "all_recovered": counts["done"] == clients,
        "seconds": round(took, 2),
        "process_cpu_s": round(usage.ru_utime + usage.ru_stime - self_before, 2),
        "redis_cpu_s": round(cpu["used_cpu_sys"] + cpu["used_cpu_user"] - redis_before, 2),
    }


# -- 3. presence() of 10,000 entries ---------------------------------------------------------


def presence_listing(url: str, layer: Any, entries: int) -> dict[str, Any]:
    import redis

    group = "big.room"
    start = time.perf_counter()
    for i in range(entries):
        channel = layer.new_channel()
        layer.group_add(group, channel)
        layer.presence_track(group, channel, user=f"u{i}", info={"n": i})
    track_s = time.perf_counter() - start
    client = redis.Redis.from_url(url)
    before = client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)
    start = time.perf_counter()
    listed = layer.presence(group)
    took = time.perf_counter() - start
    after = client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)
    client.close()
    return {
        "entries": len(listed),
        "presence_ms": round(took * 1000, 1),
        "hgetall_calls": after - before,
        "track_per_s": round(entries / track_s),
    }


# -- 4. churn across 2 processes ---------------------------------------------------------------


def churn_child(url: str, prefix: str, rate: int, seconds: float, index: int) -> None:
    """One process: ``rate`` track/untrack per second; prints what its changes reported."""
    layer = redis_layer(url, prefix)
    channels = []
    for _ in range(50):
        channel = layer.new_channel()
        layer.attach(channel, lambda m: None)
        layer.group_add("churn.room", channel)
        channels.append(channel)
    tracked: dict[str, bool] = {c: False for c in channels}
    joins = leaves = ops = 0
    interval = 1.0 / rate
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        channel = channels[i % len(channels)]
        user = f"user{(i * 7 + index) % 20}"
        if tracked[channel]:
            leaves += layer.presence_untrack("churn.room", channel)
        else:
            joins += layer.presence_track("churn.room", channel, user=user)
        tracked[channel] = not tracked[channel]
        ops += 1
        i += 1
        delay = start + ops * interval - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
    for channel, on in tracked.items():
        if on:
            leaves += layer.presence_untrack("churn.room", channel)
            ops += 1
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {"joins": joins, "leaves": leaves, "ops": ops, "ops_per_s": round(ops / elapsed)}
        )
    )
    layer.close()


def churn(url: str, prefix: str, rate: int, seconds: float) -> dict[str, Any]:
    observer = redis_layer(url, prefix)
    counts = {"presence.join": 0, "presence.leave": 0}

    def seen(message: dict[str, Any]) -> None:
        counts[message["type"]] = counts.get(message["type"], 0) + 1

    channel = observer.new_channel()
    observer.attach(channel, seen)
    observer.group_add("churn.room", channel)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "--role",
                "churn",
                "--redis",
                url,
                "--prefix",
                prefix,
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
                "--index",
                str(i),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    reports = []
    for child in children:
        while child.poll() is None:
            gevent.sleep(0.1)
        out = child.stdout.read() if child.stdout else ""
        reports.append(json.loads(out.strip().splitlines()[-1]))
    deadline = time.monotonic() + 10
    expected_joins = sum(r["joins"] for r in reports)
    expected_leaves = sum(r["leaves"] for r in reports)
    while time.monotonic() < deadline and (
        counts["presence.join"] < expected_joins or counts["presence.leave"] < expected_leaves
    ):
        gevent.sleep(0.05)
    gevent.sleep(0.5)  # anything extra would show up now
    left = len(observer.presence("churn.room"))
    observer.close()
    return {
        "ops_per_s_total": sum(r["ops_per_s"] for r in reports),
        "reported_joins": expected_joins,
        "received_joins": counts["presence.join"],
        "reported_leaves": expected_leaves,
        "received_leaves": counts["presence.leave"],
        "exact": counts["presence.join"] == expected_joins
        and counts["presence.leave"] == expected_leaves
        and expected_joins == expected_leaves,
        "entries_left": left,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="churn duration")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=500, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "churn":
        churn_child(args.redis, args.prefix, args.rate, args.seconds, args.index)
        return 0
    from wsbridge.layers.memory import MemoryLayer

    prefix = "wsbbench" + secrets.token_hex(4)
    quick = args.quick
    results: dict[str, Any] = {}
    try:
        layer = redis_layer(args.redis, prefix)
        results["group_send_redis"] = send_cost(layer, 10 if quick else 30, 100 if quick else 300)
        memory = MemoryLayer(groups=HISTORY)
        results["group_send_memory"] = send_cost(memory, 10 if quick else 30, 1000)
        results["fanout_3000_redis"] = fanout(layer, 3000, 10 if quick else 40)
        layer.close()
        results["reconnect_1000x100"] = reconnect_storm(
            args.redis, prefix, 200 if quick else 1000, 100
        )
        listing = redis_layer(args.redis, prefix)
        results["presence_10000"] = presence_listing(args.redis, listing, 2000 if quick else 10000)
        listing.close()
        results["churn_2x500_per_s"] = churn(
            args.redis, prefix, 500, 3.0 if quick else args.seconds
        )
    finally:
        cleanup(args.redis, prefix)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
