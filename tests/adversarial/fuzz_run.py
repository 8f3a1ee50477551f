"""``make fuzz``: the attack suite's fuzz targets in rounds, until a total or a time cap.

    python tests/adversarial/fuzz_run.py --examples 1000000 --seconds 36000

Each round runs ``pytest tests/adversarial -k fuzz`` with a new Hypothesis
seed and ``--per-round`` examples per target (9 targets), and adds its
figures to the report. It stops when the examples are all tried, the time
cap is reached (a round is not started when it could not finish in time),
or a round fails (its output is kept and the status returned).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = 9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000, help="total inputs to try")
    parser.add_argument("--seconds", type=float, default=36_000.0, help="time cap")
    parser.add_argument("--per-round", type=int, default=5_000, help="examples per target")
    parser.add_argument("--report", default="reports/fuzz.json")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed of the first round")
    args = parser.parse_args()
    report_path = Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    totals: dict[str, Counter] = {}
    examples: Counter = Counter()
    started = time.monotonic()
    rounds, status, last_round = 0, 0, 0.0
    while sum(examples.values()) < args.examples:
        elapsed = time.monotonic() - started
        if elapsed + last_round * 1.1 > args.seconds:
            break
        per_target = min(args.per_round, -(-(args.examples - sum(examples.values())) // TARGETS))
        round_report = report_path.with_suffix(f".round{rounds}.json")
        env = {
            **os.environ,
            "WSBRIDGE_FUZZ_PROFILE": "fuzz",
            "WSBRIDGE_FUZZ_EXAMPLES": str(per_target),
            "WSBRIDGE_FUZZ_REPORT": str(round_report),
        }
        began = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/adversarial",
                "-q",
                "-k",
                "fuzz",
                "-p",
                "no:cacheprovider",
                f"--hypothesis-seed={args.seed + rounds}",
                "--timeout",
                "3600",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        last_round = time.monotonic() - began
        rounds += 1
        if round_report.exists():
            figures = json.loads(round_report.read_text())
            for name, entry in figures["targets"].items():
                examples[name] += entry["examples"]
                totals.setdefault(name, Counter()).update(entry["seen"])
            round_report.unlink()
        if done.returncode != 0:
            print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
            status = done.returncode
            break
        print(
            f"round {rounds}: {per_target}/target in {last_round:.0f}s; "
            f"{sum(examples.values())} inputs so far",
            flush=True,
        )
    report = {
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
        "inputs": sum(examples.values()),
        "status": status,
        "targets": {
            name: {"examples": examples[name], "seen": dict(totals[name])}
            for name in sorted(totals)
        },
    }
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    print(json.dumps(report, indent=2, sort_keys=True))
    return status


if __name__ == "__main__":
    sys.exit(main())
