"""Run the Autobahn TestSuite cases (kosoku) against ``wsbridge serve``.

Usage::

    .venv/bin/python tests/conformance/run.py            # all 517 cases
    .venv/bin/python tests/conformance/run.py --quick    # the subset make test runs
    .venv/bin/python tests/conformance/run.py -i '9.*'   # chosen cases

Starts ``wsbridge serve tests.conformance.echo_app:application`` on a free
port, runs ``kosoku`` against it with its reports in a temporary directory,
reads the verdicts from kosoku's ``index.json`` and ends with exactly one
line ``conformance: N passed, M failed, K unimplemented of T``.

Verdicts as Autobahn counts them: a case passes when its ``behavior`` is
OK, NON-STRICT or INFORMATIONAL and its ``behaviorClose`` is OK or
INFORMATIONAL; UNIMPLEMENTED counts as unimplemented; anything else
(FAILED, WRONG CODE, UNCLEAN, ERROR...) fails. Exit status 0 when nothing
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.conformance.echo_app:application"

#: The fast subset run inside ``make test`` (and by ``--quick``).
QUICK_CASES = [
    "1.*",
    "2.*",
    "3.*",
    "4.*",
    "5.*",
    "6.1.*",
    "6.2.*",
    "6.3.*",
    "6.4.*",
    "6.7.*",
    "6.12.1",
    "6.21.*",
    "7.1.*",
    "7.3.*",
    "7.5.1",
    "7.7.*",
    "7.9.*",
    "7.13.*",
    "9.1.1",
    "9.2.1",
    "10.*",
    "12.1.1",
    "12.2.1",
    "12.5.1",
    "13.1.1",
    "13.3.1",
    "13.7.1",
]

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_PASSING = {"OK", "INFORMATIONAL"}


@dataclass
class Summary:
    passed: int = 0
    failed: int = 0
    unimplemented: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.unimplemented

    def line(self) -> str:
        return (
            f"conformance: {self.passed} passed, {self.failed} failed, "
            f"{self.unimplemented} unimplemented of {self.total}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``wsbridge serve`` with the echo app; wait until it accepts connections."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            APP,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"wsbridge serve exited with {proc.returncode}: {log_path.read_text()}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"wsbridge serve did not listen on port {port} within 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def summarize(index_path: Path) -> Summary:
    """Count verdicts in kosoku's ``index.json`` ({agent: {case: {behavior, behaviorClose}}})."""
    index = json.loads(index_path.read_text())
    summary = Summary()
    for cases in index.values():
        for case_id, result in cases.items():
            behavior = result.get("behavior")
            closing = result.get("behaviorClose")
            if behavior == "UNIMPLEMENTED":
                summary.unimplemented += 1
            elif behavior in PASSING and closing in CLOSE_PASSING:
                summary.passed += 1
            else:
                summary.failed += 1
                summary.failures[case_id] = f"{behavior} / {closing}"
    return summary


def run(cases: list[str] | None = None, *, parallelism: int = 4, verbose: bool = False) -> Summary:
    """Serve the echo app, run kosoku on ``cases`` (None = all), return the verdicts."""
    kosoku = Path(sys.executable).with_name("kosoku")
    with tempfile.TemporaryDirectory(prefix="wsbridge-conformance-") as tmp:
        outdir = Path(tmp) / "reports"
        port = free_port()
        server = start_server(port, Path(tmp) / "server.log")
        try:
            command = [
                str(kosoku),
                f"ws://127.0.0.1:{port}",
                "-o",
                str(outdir),
                "-p",
                str(parallelism),
            ]
            for case in cases or ():
                command += ["-i", case]
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
            if verbose:
                print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        finally:
            stop_server(server)
        index = outdir / "index.json"
        if not index.exists():
            raise RuntimeError(
                f"kosoku wrote no report (exit {done.returncode}): {done.stderr[-2000:]}"
            )
        summary = summarize(index)
        if verbose or summary.failed:
            for case_id, verdict in sorted(summary.failures.items()):
                print(f"  failed {case_id}: {verdict}", file=sys.stderr)
            log = (Path(tmp) / "server.log").read_text(errors="replace")
            if summary.failed and log.strip():
                print("server log (tail):\n" + log[-3000:], file=sys.stderr)
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run the fast subset only")
    parser.add_argument("-i", "--include", action="append", help="case id or glob (repeatable)")
    parser.add_argument("-p", "--parallelism", type=int, default=4)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    cases = args.include or (QUICK_CASES if args.quick else None)
    summary = run(cases, parallelism=args.parallelism, verbose=args.verbose)
    print(summary.line(), flush=True)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
