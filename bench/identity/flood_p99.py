"""One flooding client against 50 well-behaved echo clients: their p99, with and without it.

    .venv/bin/python bench/identity/flood_p99.py [--seconds 10] [--clients 50] [--repeat 3]

Starts ``wsbridge serve tests.transport.ws_apps:application`` (library
defaults, so wsbridge.admission's default limits), then, for each phase, 50
clients (one gevent process, source 127.0.0.1) each doing one echo round trip
every 50 ms, measuring every round trip. Phase 2 adds a flooder process on
source address 127.0.0.2 (its own per-IP budget) that writes small text frames
as fast as the kernel takes them, reconnecting whenever it is closed, and
reads and discards everything. Prints p50/p99/max per phase, the ratio, and
what the flooder saw (close codes). Bounded in time; stops what it started.
Not a test: no assertion, figures go to the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import start_wsbridge_serve  # noqa: E402

CLIENT = r"""
import gevent.monkey; gevent.monkey.patch_all()
import json, sys, time, gevent
sys.path.insert(0, sys.argv[1])
from tests.transport.wsclient import open_raw, frame, read_frame
port, clients, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
samples, stamps, errors = [], [], []
def run(i):
    sock, rest = open_raw(port, "/echo/")
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        payload = f"c{i}-{n}".encode(); n += 1
        t0 = time.perf_counter()
        sock.sendall(frame(0x1, payload))
        got, rest = read_frame(sock, rest, timeout=10)
        samples.append(time.perf_counter() - t0)
        stamps.append(t0)
        if got.data != payload: errors.append("mismatch")
        gevent.sleep(0.05)
    sock.close()
jobs = [gevent.spawn(run, i) for i in range(clients)]
gevent.joinall(jobs, timeout=seconds + 30)
errors += [repr(j.exception) for j in jobs if j.exception]
print(json.dumps({"samples": samples, "stamps": stamps, "errors": errors[:5]}))
"""

FLOODER = r"""
import gevent.monkey; gevent.monkey.patch_all()
import json, socket, sys, time, gevent
sys.path.insert(0, sys.argv[1])
from tests.transport.wsclient import frame, handshake_bytes, read_response
port, seconds = int(sys.argv[2]), float(sys.argv[3])
chunk = frame(0x1, b"flood-flood-flood") * 500
stats = {"sent_frames": 0, "connections": 0, "closes": {}}
def drain(sock):
    try:
        while sock.recv(65536): pass
    except OSError: pass
end = time.monotonic() + seconds
while time.monotonic() < end:
    sock = socket.socket(); sock.bind(("127.0.0.2", 0)); sock.connect(("127.0.0.1", port))
    sock.sendall(handshake_bytes("/echo/", port))
    status = read_response(sock)[0]
    stats["connections"] += 1
    if status != 101:
        stats["closes"][str(status)] = stats["closes"].get(str(status), 0) + 1
        sock.close(); gevent.sleep(0.05); continue
    reader = gevent.spawn(drain, sock)
    try:
        while time.monotonic() < end:
            sock.sendall(chunk); stats["sent_frames"] += 500
            gevent.sleep(0)
    except OSError as exc:
        stats["closes"]["reset"] = stats["closes"].get("reset", 0) + 1
    sock.close(); reader.kill()
print(json.dumps(stats))
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def phase(port: int, clients: int, seconds: float, flood: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flooder = None
    if flood:
        flooder = subprocess.Popen(
            [sys.executable, "-c", FLOODER, str(ROOT), str(port), str(seconds + 2)],
            stdout=subprocess.PIPE,
            env=env,
        )
        time.sleep(1.0)  # the flood is on before the measurement starts
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, str(ROOT), str(port), str(clients), str(seconds)],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 60,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    samples = result["samples"] or [float("nan")]
    slow_by_second = {}
    if result["samples"]:
        # Where the slowest 1% fall, per second of the phase: a flood's bursts show up
        # as seconds that hold most of them.
        cut = sorted(result["samples"])[int(0.99 * len(result["samples"]))]
        start = min(result["stamps"])
        for value, stamp in zip(result["samples"], result["stamps"], strict=True):
            if value >= cut:
                second = str(int(stamp - start))
                slow_by_second[second] = slow_by_second.get(second, 0) + 1
    out = {
        "slowest_1pct_by_second": dict(sorted(slow_by_second.items(), key=lambda kv: int(kv[0]))),
        "round_trips": len(samples),
        "p50_ms": round(pct(samples, 0.5), 2),
        "p99_ms": round(pct(samples, 0.99), 2),
        "max_ms": round(max(samples) * 1000, 2),
        "errors": result["errors"],
    }
    if flooder is not None:
        stdout, _ = flooder.communicate(timeout=seconds + 30)
        out["flooder"] = json.loads(stdout.strip().splitlines()[-1])
    return out


def steal_ticks() -> int:
    """CPU steal so far (clock ticks, all CPUs): the shared VM's noise, read per run."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="quiet/flooded pairs, interleaved")
    args = parser.parse_args()
    import statistics
    import tempfile

    rounds = []
    for _ in range(args.repeat):
        # A fresh server per round: its per-address penalties start empty.
        server = start_wsbridge_serve(
            "tests.transport.ws_apps:application", Path(tempfile.mkdtemp())
        )
        steal = steal_ticks()
        try:
            quiet = phase(server.port, args.clients, args.seconds, flood=False)
            flooded = phase(server.port, args.clients, args.seconds, flood=True)
        finally:
            server.stop()
        ratio = flooded["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("nan")
        rounds.append(
            {
                "quiet": quiet,
                "flooded": flooded,
                "p99_ratio": round(ratio, 2),
                "steal_ticks": steal_ticks() - steal,
            }
        )
        tripped = [
            line
            for line in server.log().splitlines()
            if "wsbridge.limits" in line or "per second over" in line
        ]
        print("\n".join(tripped[:4]), file=sys.stderr)
    ratios = [r["p99_ratio"] for r in rounds]
    summary = {"p99_ratios": ratios, "median_p99_ratio": statistics.median(ratios)}
    print(json.dumps({"rounds": rounds, **summary}, indent=2))


if __name__ == "__main__":
    main()
