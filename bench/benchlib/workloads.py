"""The workloads: each starts a fresh server, drives the load client, stops what it started.

Every step has a time limit; every process started here is stopped here (by
PID) whatever happens. A workload returns one result dict (saved as JSON by
the caller), with ``ok`` false and ``error`` set when something failed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import BENCH_DIR, REPO_DIR
from .procs import (
    CLIENT_CORE,
    CpuMeter,
    MachineMeter,
    Proc,
    RedisServer,
    free_port,
    pinned,
    tree_rss_kb,
    wait_for_quiet,
)
from .targets import Target
from .venvs import ensure_loadclient, project_python, venv_bin


@dataclass
class Context:
    """What one bench session shares: its Redis, folders, options."""

    redis: RedisServer
    run_dir: Path
    log_dir: Path
    samples_dir: Path
    count: int = 50  # fan-out messages
    interval: float = 0.2  # s between fan-out messages
    grace: float = 30.0  # s to wait for stragglers after the last publish
    echo_duration: float = 10.0
    echo_interval_ms: int = 50
    handshake_duration: float = 10.0
    handshake_keep_open: bool = False  # keep `clients` open per round (100 in flight)
    idle_settle: float = 2.0
    profile: bool = False
    profile_rate: int = 100  # py-spy samples per second
    quiet_wait: float = 0.0  # s to wait for a quiet machine before each measurement

    def __post_init__(self) -> None:
        self.client_js = ensure_loadclient()


# each client run gets fresh source addresses (see --local-seed in client.js)
_client_runs = random.randrange(240)


def _next_seed() -> int:
    global _client_runs
    _client_runs += 1
    return _client_runs


class Session:
    """One server plus whatever else a workload starts; stops them all on exit."""

    def __init__(self, ctx: Context, target: Target, tag: str) -> None:
        self.ctx, self.target, self.tag = ctx, target, tag
        self.procs: list[Proc] = []
        self.port = free_port()
        self.server: Proc | None = None

    def __enter__(self) -> Session:
        if self.ctx.quiet_wait > 0:
            self.busy_before = wait_for_quiet(self.ctx.quiet_wait)
        self.ctx.redis.flush()
        self.server = self.target.start(self.port, self.ctx.redis.url, self.ctx.log_dir, self.tag)
        self.procs.append(self.server)
        self._probe()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            deadline = getattr(proc, "let_finish_until", None)
            if deadline is not None:  # py-spy writes its file when its duration ends
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for proc in reversed(self.procs):
            proc.stop()

    def client(self, mode: str, url: str, *args: str, timeout: float) -> Proc:
        cmd = [
            "node",
            "--max-old-space-size=4096",
            str(self.ctx.client_js),
            "--url",
            url,
            "--proto",
            self.target.proto,
            "--mode",
            mode,
            "--timeout",
            str(int(timeout)),
            "--local-seed",
            str(_next_seed()),
            *args,
        ]
        proc = Proc(
            f"{self.tag}-client-{mode}",
            cmd,
            log_dir=self.ctx.log_dir,
            core=CLIENT_CORE,
            stdin=True,
            stdout_lines=True,
        )
        self.procs.append(proc)
        return proc

    def _probe(self) -> None:
        """A few handshakes: the target answers WebSockets, and lazy imports are done."""
        probe = self.client(
            "handshake",
            self.target.echo_url(self.port),
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--max-handshakes",
            "20",
            timeout=30,
        )
        result = probe.expect("result", 30)
        probe.stop()
        if not result.get("completed"):
            raise RuntimeError(f"{self.target.name}: probe handshakes failed: {result}")

    def rss(self) -> dict[str, Any]:
        assert self.server is not None
        return tree_rss_kb([self.server.pid])

    def machine_meter(self) -> MachineMeter:
        """Whole-machine busy time, less ours (server, clients, Redis): the noise."""
        return MachineMeter([p.pid for p in self.procs] + [self.ctx.redis.proc.pid]).start()

    def server_meter(self) -> CpuMeter:
        assert self.server is not None
        return CpuMeter([self.server.pid]).start()

    def profiler(self, seconds: float, suffix: str = "") -> Proc | None:
        """py-spy on every server process for ``seconds`` (with --profile)."""
        if not self.ctx.profile or self.server is None:
            return None
        from .procs import tree

        pids = [p for p in tree(self.server.pid)]
        if len(pids) > 1:  # gunicorn: profile one worker, not the idle master
            pids = pids[1:2]
        out = self.ctx.run_dir / "profiles" / f"{self.tag}{suffix}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(venv_bin("tools", "py-spy")),
            "record",
            "--pid",
            str(pids[0]),
            "--duration",
            str(int(max(1, seconds))),
            "--rate",
            str(self.ctx.profile_rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ]
        proc = Proc(f"{self.tag}-py-spy", cmd, log_dir=self.ctx.log_dir, core=CLIENT_CORE)
        proc.let_finish_until = time.monotonic() + seconds + 10  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc


def _samples(ctx: Context, tag: str) -> Path:
    ctx.samples_dir.mkdir(parents=True, exist_ok=True)
    return ctx.samples_dir / f"{tag}.json"


def fanout(ctx: Context, target: Target, clients: int, tag: str) -> dict[str, Any]:
    with Session(ctx, target, tag) as s:
        rss_before = s.rss()
        samples = _samples(ctx, tag)
        publish_time = ctx.count * ctx.interval
        ramp_cpu = s.server_meter()  # the joins: connect, group_add, accept
        s.profiler(3.0, "-ramp")
        client = s.client(
            "fanout",
            target.chat_url(s.port),
            "--clients",
            str(clients),
            "--grace",
            str(ctx.grace),
            "--connect-timeout",
            "150",
            "--samples",
            str(samples),
            timeout=150 + publish_time + ctx.grace + 90,
        )
        ready = client.expect("ready", 180)
        ramp_window = ramp_cpu.stop()
        time.sleep(1.0)  # the last joins reach the layer before the first publish
        rss_connected = s.rss()
        server_cpu, client_cpu = s.server_meter(), CpuMeter([client.pid]).start()
        machine = s.machine_meter()
        s.profiler(publish_time)
        pub = target.publisher(s.port, ctx.redis.url, ctx.log_dir, tag, ctx.count, ctx.interval)
        s.procs.append(pub)
        published = pub.expect("published", publish_time + 120)
        client.tell(f"published {published['count']}")
        result = client.expect("result", ctx.grace + 60)
        server_window = server_cpu.stop()
        return {
            "machine": machine.stop(),
            "ready": ready,
            "publisher": published,
            "client": result,
            "server_cpu": server_window,
            "ramp_server_cpu": ramp_window,
            # server CPU per join (connect, group_add, accept) while the clients ramp up
            "server_us_per_join": round(
                1e6 * ramp_window["cpu_s"] / max(1, ready.get("connected") or clients), 1
            ),
            # CPU per delivered message: steadier than latency on a shared machine
            "server_us_per_delivery": round(
                1e6 * server_window["cpu_s"] / max(1, result["delivered"]), 2
            ),
            "client_cpu": client_cpu.stop(),
            "rss_before_kb": rss_before["total_kb"],
            "rss_connected_kb": rss_connected["total_kb"],
            "samples": str(samples.relative_to(ctx.run_dir)),
        }


def echo(
    ctx: Context, target: Target, clients: int, tag: str, closed_loop: bool = False
) -> dict[str, Any]:
    with Session(ctx, target, tag) as s:
        samples = _samples(ctx, tag)
        args = [
            "--clients",
            str(clients),
            "--duration",
            str(ctx.echo_duration),
            "--interval-ms",
            str(ctx.echo_interval_ms),
            "--samples",
            str(samples),
        ]
        if closed_loop:
            args.append("--closed-loop")
        client = s.client("echo", target.echo_url(s.port), *args, timeout=ctx.echo_duration + 120)
        ready = client.expect("ready", 90)
        time.sleep(0.5)
        server_cpu, client_cpu = s.server_meter(), CpuMeter([client.pid]).start()
        machine = s.machine_meter()
        s.profiler(ctx.echo_duration)
        client.tell("go")
        client.expect("window_end", ctx.echo_duration + 30)
        server_window, client_window = server_cpu.stop(), client_cpu.stop()
        machine_window = machine.stop()
        result = client.expect("result", 30)
        return {
            "machine": machine_window,
            "ready": ready,
            "client": result,
            "server_cpu": server_window,
            "client_cpu": client_window,
            "samples": str(samples.relative_to(ctx.run_dir)),
        }


def idle(ctx: Context, target: Target, clients: int, tag: str) -> dict[str, Any]:
    with Session(ctx, target, tag) as s:
        time.sleep(0.5)
        rss_before = s.rss()
        client = s.client(
            "idle",
            target.chat_url(s.port),
            "--clients",
            str(clients),
            "--connect-timeout",
            "150",
            timeout=240,
        )
        machine = s.machine_meter()
        ready = client.expect("ready", 180)
        time.sleep(ctx.idle_settle)
        rss_after = s.rss()
        client.tell("done")
        result = client.expect("result", 30)
        connected = max(1, result.get("still_open") or ready.get("connected") or 1)
        return {
            "machine": machine.stop(),
            "ready": ready,
            "client": result,
            "rss_before_kb": rss_before["total_kb"],
            "rss_after_kb": rss_after["total_kb"],
            "rss_per_process_kb": rss_after["per_pid_kb"],
            "kb_per_connection": round(
                (rss_after["total_kb"] - rss_before["total_kb"]) / connected, 2
            ),
        }


def handshake(ctx: Context, target: Target, clients: int, tag: str) -> dict[str, Any]:
    """Handshakes in ``clients`` concurrent loops (connect, open, close, again), or with
    ``ctx.handshake_keep_open`` rounds that open ``clients`` connections, 100 in flight,
    and keep each open until all are."""
    shape = ["--concurrency", str(clients)]
    if ctx.handshake_keep_open:
        shape = ["--concurrency", str(min(clients, 100)), "--keep-open", str(clients)]
    with Session(ctx, target, tag) as s:
        samples = _samples(ctx, tag)
        server_cpu = s.server_meter()
        client = s.client(
            "handshake",
            target.echo_url(s.port),
            *shape,
            "--duration",
            str(ctx.handshake_duration),
            "--samples",
            str(samples),
            timeout=ctx.handshake_duration + 90,
        )
        client_cpu = CpuMeter([client.pid]).start()
        machine = s.machine_meter()
        s.profiler(ctx.handshake_duration)
        result = client.expect("result", ctx.handshake_duration + 60)
        return {
            "machine": machine.stop(),
            "client": result,
            "server_cpu": server_cpu.stop(),
            "client_cpu": client_cpu.stop(),
            "samples": str(samples.relative_to(ctx.run_dir)),
        }


def external(
    ctx: Context, script: str, tag: str, extra: list[str], timeout: float
) -> dict[str, Any]:
    """Run another helper's bench script (layer_bench.py, longpoll_bench.py) and keep its JSON.

    The script runs in the project's venv on the client core with its own
    defaults (bounded by itself) plus ``extra``; what it prints last as JSON
    is its report.
    """
    path = BENCH_DIR / script
    if not path.exists():
        return {"skipped": f"bench/{script} is not there yet"}
    cmd = pinned([str(project_python()), str(path), *extra], CLIENT_CORE)
    ctx.redis.flush()
    log = ctx.log_dir / f"{tag}.log"
    env = {**os.environ, "BENCH_REDIS_URL": ctx.redis.url}
    proc = subprocess.run(
        cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"bench/{script} exited {proc.returncode}; see {log}")
    return {"command": " ".join(cmd[cmd.index(str(path)) :]), "report": last_json(proc.stdout)}


def last_json(text: str) -> Any:
    """The last JSON value printed: the whole text, else the last line, else from the last
    line that starts with '{' (an indented dump) to the end."""
    for candidate in (text, *reversed(text.strip().splitlines()[-1:])):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    lines = text.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
    return {"unparsed_output": text[-2000:]}


WORKLOADS = {
    "fanout": fanout,
    "echo": echo,
    "idle": idle,
    "handshake": handshake,
}


def run_one(ctx: Context, target: Target, workload: str, clients: int, **kw: Any) -> dict[str, Any]:
    """One (target, workload, N) measurement; never raises, records the error instead."""
    trial = kw.pop("trial", None)
    tag = f"{target.name}-{workload}{'-closed' if kw.get('closed_loop') else ''}-{clients}"
    if trial is not None:
        tag += f"-t{trial}"
    started = time.time()
    record: dict[str, Any] = {
        "target": target.name,
        "workload": workload,
        "clients": clients,
        "tag": tag,
        "started": started,
    }
    if kw.get("closed_loop"):
        record["closed_loop"] = True
    if trial is not None:
        record["trial"] = trial
    print(f"[bench] {tag} ...", flush=True, file=sys.stderr)
    try:
        record.update(WORKLOADS[workload](ctx, target, clients, tag, **kw))
        record["ok"] = True
    except Exception as exc:
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    record["elapsed_s"] = round(time.time() - started, 1)
    print(
        f"[bench] {tag} {'ok' if record['ok'] else 'FAILED: ' + record['error']} "
        f"({record['elapsed_s']}s)",
        flush=True,
        file=sys.stderr,
    )
    return record
