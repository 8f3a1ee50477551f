"""group_send to 20,000 members over 4 processes: a 3-master Redis Cluster vs one Redis.

    .venv/bin/python bench/cluster_bench.py [--members 20000] [--processes 4] [--rounds 30]

Starts its own servers on free loopback ports (a 3 masters + 3 replicas
cluster with ``tests/layers/redis_cluster.py``, one plain ``redis-server``)
and, for each, ``--processes`` member processes each attaching
``members / processes`` channels to one group. The sender (this process)
runs ``--rounds`` group_sends; each member process reports when all its
members had each round. Reported per target: delivered / expected, the
sender's call time and the end-to-end time (until the last member has it),
median and p99; plus the call time, with no receiver busy, for a tenth of
the members and for all (fake members on as many processes): group_send's
Redis work follows processes, not members.

Not a test: figures go in reports, never in assertions.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
GROUP = "bench.cluster"


def layer_for(config: dict[str, Any]) -> Any:
    from wsbridge.layers.redis import RedisLayer

    return RedisLayer(**config)


def member(config: dict[str, Any], count: int, rounds: int) -> None:
    """A member process: ``count`` attached channels in the group; report each full round."""
    from gevent import monkey

    monkey.patch_all()
    from gevent.event import Event

    layer = layer_for(config)
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
        layer.group_add(GROUP, channel)
    print("READY", flush=True)
    all_done.wait(180)
    delivered = sum(got.values())
    layer.close()
    print(json.dumps({"finished": finished, "delivered": delivered}), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_target(config: dict[str, Any], members: int, processes: int, rounds: int) -> dict:
    from gevent import monkey

    monkey.patch_all()
    import gevent

    per = members // processes
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "--role",
                "member",
                "--config",
                json.dumps(config),
                "--count",
                str(per),
                "--rounds",
                str(rounds),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    layer = layer_for(config)
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        sent: dict[int, float] = {}
        calls = []
        for i in range(rounds):
            sent[i] = time.time()
            started = time.perf_counter()
            layer.group_send(GROUP, {"type": "bench.message", "text": "x" * 100, "i": i})
            calls.append((time.perf_counter() - started) * 1000)
            gevent.sleep(0.3)
        results = [json.loads(proc.stdout.readline()) for proc in procs]  # type: ignore[union-attr]
        e2e = [
            (max(r["finished"][str(i)] for r in results) - sent[i]) * 1000
            for i in range(rounds)
            if all(str(i) in r["finished"] for r in results)
        ]
        delivered = sum(r["delivered"] for r in results)
        # group_send's cost against member count, with no receiver busy: fake
        # members (same number of processes) in groups of a tenth and of all.
        quiet = {}
        for size in (members // 10, members):
            fake = f"{GROUP}.fake{size}"
            for n in range(size):
                layer.group_add(fake, f"specific.fakeproc{n % processes}!{n:08x}")
            times = []
            for i in range(rounds):
                started = time.perf_counter()
                layer.group_send(fake, {"type": "bench.message", "text": "x" * 100, "i": i})
                times.append((time.perf_counter() - started) * 1000)
            quiet[str(size)] = statistics.median(times)
    finally:
        layer.flush()
        layer.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return {
        "delivered": delivered,
        "expected": members * rounds,
        "call_ms": {"median": statistics.median(calls), "p99": percentile(calls, 0.99)},
        "e2e_ms": {"median": statistics.median(e2e), "p99": percentile(e2e, 0.99)} if e2e else None,
        "quiet_call_ms_by_members": quiet,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "member":
        member(json.loads(args.config), args.count, args.rounds)
        return 0
    from tests.layers.redis_cluster import LocalCluster
    from tests.layers.redis_server import RedisServer

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wsbridge-cluster-bench-") as tmp:
        single = RedisServer(Path(tmp) / "single")
        cluster = LocalCluster(Path(tmp) / "cluster")
        try:
            single.start()
            cluster.start()
            prefix = "bench" + secrets.token_hex(4)
            targets = {
                "one Redis": {"hosts": [single.url], "prefix": prefix},
                "3-master cluster": {"hosts": cluster.urls, "cluster": True, "prefix": prefix},
            }
            for name, config in targets.items():
                report[name] = run_target(config, args.members, args.processes, args.rounds)
        finally:
            cluster.stop()
            single.stop()
    print(
        f"group_send to {args.members} members over {args.processes} processes, "
        f"{args.rounds} rounds"
    )
    for name, result in report.items():
        e2e = result["e2e_ms"] or {"median": float("nan"), "p99": float("nan")}
        print(
            f"  {name:>17}: delivered {result['delivered']}/{result['expected']}; call "
            f"median {result['call_ms']['median']:.2f} ms p99 {result['call_ms']['p99']:.2f} ms; "
            f"end-to-end median {e2e['median']:.1f} ms p99 {e2e['p99']:.1f} ms; quiet call "
            f"by members {result['quiet_call_ms_by_members']}"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
