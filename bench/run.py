#!/usr/bin/env python3
"""Side-by-side benchmarks: wsbridge against the peers users would pick, in one run.

One command per workload and target::

    python bench/run.py --target wsbridge --workload fanout --clients 5000
    python bench/run.py --target socketio --workload echo
    python bench/run.py --all                 # everything, one run (ratios hold)

Every server runs on 127.0.0.1, pinned to core 0; the Node.js load client,
the bench's own redis-server and the publishers run on core 1. Every run is
bounded in count and time and stops only the processes it started. Results
go to ``bench/results/<run id>/`` (JSON, logs, latency samples) and a table
is printed; ``--report`` also writes the plots and the table in
docs/topics/performance.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import RESULTS_DIR  # noqa: E402
from benchlib.procs import RedisServer, raise_nofile  # noqa: E402
from benchlib.table import print_table  # noqa: E402
from benchlib.targets import TARGETS, VERSION_PACKAGES  # noqa: E402

#: Targets --all leaves out: experiments and variants, measured when named.
BY_NAME_ONLY = {
    "wsbridge-baseline",
    "wsbridge-fastpath",
    "wsbridge-metrics",
    "wsbridge-cpython-gc",
    "wsbridge-redis1",
    "wsbridge-redis1-metrics",
    "wsbridge-redis1-gcoff",
    "wsbridge-redis1-gcfreeze",
    "wsbridge-redis1-gc50k",
    "wsbridge-redis1-baseline",
    "wsbridge-fastlane",
    "wsbridge-redis1-fastlane",
    "wsbridge-redis-fastlane",
    "wsbridge-uwsgi",
}
from benchlib.venvs import (  # noqa: E402
    ensure_loadclient,
    ensure_venv,
    installed_versions,
    venv_python,
)
from benchlib.workloads import Context, external, run_one  # noqa: E402

WORKLOADS = ["fanout", "echo", "idle", "handshake", "layer", "longpoll"]
DEFAULT_CLIENTS = {"fanout": [1000, 3000, 5000], "echo": [200], "idle": [5000], "handshake": [100]}


def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    ws_pkg = Path(__file__).resolve().parent / "loadclient" / "node_modules" / "ws" / "package.json"
    ws_version = json.loads(ws_pkg.read_text())["version"] if ws_pkg.exists() else "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "ws": ws_version,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--target",
        action="append",
        choices=sorted(TARGETS),
        help="a target (repeat for several); default: all of them",
    )
    p.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="a workload (repeat for several); default: all of them",
    )
    p.add_argument(
        "--clients",
        type=int,
        action="append",
        help="clients (repeatable); default per workload: fanout 1000,3000,5000; "
        "echo 200; idle 5000; handshake: concurrency 100",
    )
    p.add_argument("--all", action="store_true", help="every target and workload, one run")
    p.add_argument(
        "--extra",
        action="store_true",
        help="with --all: also 10,000 idle sockets (wsbridge) and 10,000 fan-out "
        "members over two processes (wsbridge-redis)",
    )
    p.add_argument(
        "--fastpath",
        action="store_true",
        help="with --all: also the target wsbridge-fastpath (the proposed change of "
        "bench/patches/fastpath.py --pump, measured in the same run)",
    )
    p.add_argument(
        "--closed-loop",
        action="store_true",
        help="echo: each client sends its next message when the reply arrives "
        "(throughput at saturation) instead of every --echo-interval-ms",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="trials of each measurement, round-robin over the targets; the tables "
        "and goals use each one's median trial (a shared machine is noisy)",
    )
    p.add_argument("--count", type=int, default=50, help="fan-out: messages published (default 50)")
    p.add_argument("--interval", type=float, default=0.2, help="fan-out: seconds between messages")
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="fan-out: seconds to wait for missing deliveries after the last publish",
    )
    p.add_argument("--echo-duration", type=float, default=10.0)
    p.add_argument("--echo-interval-ms", type=int, default=50)
    p.add_argument("--handshake-duration", type=float, default=10.0)
    p.add_argument(
        "--keep-open",
        action="store_true",
        help="handshake: rounds that open --clients connections (100 in flight) and keep "
        "each open until all are, then close them; only the opening is timed",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the servers (experiments); recorded in the results",
    )
    p.add_argument(
        "--wsbridge-src",
        metavar="DIR",
        help="import wsbridge from DIR (a patched copy of the package's parent folder) "
        "for the wsbridge targets: measure a change side by side",
    )
    p.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="for the target wsbridge-baseline: import wsbridge from DIR (e.g. a git worktree "
        "of the commit before a change), so before and after run in one bench run",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement wait up to SECONDS for the machine to be idle "
        "(other work on it skews the figures; each result records it as 'others')",
    )
    p.add_argument(
        "--profile", action="store_true", help="py-spy record the server during each run"
    )
    p.add_argument(
        "--profile-rate",
        type=int,
        default=100,
        metavar="HZ",
        help="with --profile: py-spy samples per second (100; 400 gives a handshake's "
        "smaller parts enough samples)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="write plots and the table into docs/topics/performance.rst afterwards",
    )
    p.add_argument("--install", action="store_true", help="only create/update the venvs and exit")
    args = p.parse_args(argv)
    if args.all:
        args.target = args.target or [t for t in TARGETS if t not in BY_NAME_ONLY]
        if args.fastpath and "wsbridge-fastpath" not in args.target:
            args.target.insert(1, "wsbridge-fastpath")
        args.workload = args.workload or WORKLOADS
    if not args.install and (not args.target or not args.workload):
        p.error("give --target and --workload, or --all")
    for bound in ("count", "echo_duration", "handshake_duration", "grace"):
        if getattr(args, bound) > 600:
            p.error(f"--{bound.replace('_', '-')} is bounded to 600")
    if not 1 <= args.repeat <= 5:
        p.error("--repeat is bounded to 1..5")
    if args.clients and max(args.clients) > 15000:
        p.error("--clients is bounded to 15000 (RLIMIT_NOFILE and ephemeral ports)")
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, dict]]:
    """(target, workload, clients, options) in run order: workload by workload, so a
    workload's figures for every target are taken close together."""
    steps = []
    for workload in args.workload:
        if workload in ("layer", "longpoll"):
            continue
        for clients in args.clients or DEFAULT_CLIENTS[workload]:
            # --repeat: round-robin over the targets, so a burst of outside load
            # hits every target's trials alike; the tables keep each median.
            for trial in range(args.repeat):
                for target in args.target:
                    kw = {"trial": trial} if args.repeat > 1 else {}
                    if workload == "echo" and (args.closed_loop and not args.all):
                        steps.append((target, workload, clients, {**kw, "closed_loop": True}))
                        continue
                    steps.append((target, workload, clients, dict(kw)))
                    if workload == "echo" and args.all:
                        steps.append((target, workload, clients, {**kw, "closed_loop": True}))
    if args.all and args.extra:
        if "wsbridge" in args.target:
            steps.append(("wsbridge", "idle", 10000, {}))
        if "wsbridge-redis" in args.target:
            steps.append(("wsbridge-redis", "fanout", 10000, {}))
    return steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    if args.wsbridge_src:
        from benchlib import targets as targets_module

        targets_module.WSBRIDGE_SRC.append(str(Path(args.wsbridge_src).resolve()))
    if args.baseline_src:
        from benchlib import targets as targets_module

        targets_module.BASELINE_SRC.append(str(Path(args.baseline_src).resolve()))
    for item in args.server_env:
        key, _, value = item.partition("=")
        for target in TARGETS.values():
            target.extra_env[key] = value
    targets = args.target or list(TARGETS)
    for name in sorted({TARGETS[t].venv for t in targets} | {"tools"}):
        ensure_venv(name)
    for t in targets:
        TARGETS[t].prepare()
    ensure_loadclient()
    if args.install:
        return 0
    run_id = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS_DIR / run_id
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(log_dir)
    meta = {
        "run_id": run_id,
        "argv": sys.argv[1:],
        "machine": machine(),
        "rlimit_nofile": list(nofile),
        "redis": redis.version(),
        "versions": {
            v: installed_versions(v, VERSION_PACKAGES[v])
            for v in sorted({TARGETS[t].venv for t in targets})
        },
        "targets": {t: TARGETS[t].description for t in targets},
        "options": {
            k: getattr(args, k)
            for k in (
                "count",
                "interval",
                "grace",
                "echo_duration",
                "echo_interval_ms",
                "handshake_duration",
                "keep_open",
            )
        },
        "server_env": args.server_env,
        "wsbridge_src": args.wsbridge_src,
        "pinning": "servers on core 0 (both gunicorn workers too); "
        "load client, Redis, publishers on core 1",
    }
    ctx = Context(
        redis=redis,
        run_dir=run_dir,
        log_dir=log_dir,
        samples_dir=run_dir / "samples",
        count=args.count,
        interval=args.interval,
        grace=args.grace,
        echo_duration=args.echo_duration,
        echo_interval_ms=args.echo_interval_ms,
        handshake_duration=args.handshake_duration,
        handshake_keep_open=args.keep_open,
        profile=args.profile,
        profile_rate=args.profile_rate,
        quiet_wait=args.quiet_wait,
    )
    results: list[dict] = []
    out = run_dir / "results.json"

    def save() -> None:
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))

    try:
        for target, workload, clients, kw in plan(args):
            results.append(run_one(ctx, TARGETS[target], workload, clients, **kw))
            save()
        scripts = (
            ("layer", "layer_bench.py", ["--redis", redis.url]),
            ("longpoll", "longpoll_bench.py", []),
        )
        for workload, script, extra in scripts:
            if workload in args.workload:
                rec = {"target": "wsbridge", "workload": workload, "tag": workload}
                try:
                    rec.update(external(ctx, script, workload, extra, timeout=300))
                    rec["ok"] = "skipped" not in rec
                except Exception as exc:  # recorded, the run goes on
                    rec.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                results.append(rec)
                save()
    finally:
        redis.stop()
        save()
    latest = RESULTS_DIR / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run_id)
    print_table(meta, results)
    print(f"\nresults: {out}")
    if args.report:
        subprocess.run(
            [
                str(venv_python("tools")),
                str(Path(__file__).resolve().parent / "report.py"),
                str(out),
            ],
            check=False,
        )
    return 0 if all(r.get("ok") or r.get("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
