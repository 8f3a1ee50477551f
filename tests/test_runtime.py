"""wsbridge.runtime.require_monkey_patched: a clear start-up error instead of a stalled process.

Each case runs in a fresh interpreter, since monkey-patching cannot be undone.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
from wsbridge.exceptions import ConfigurationError
from wsbridge.runtime import require_monkey_patched
try:
    require_monkey_patched()
except ConfigurationError as exc:
    print("ERROR", exc)
else:
    print("OK")
"""


def run(prefix: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", prefix + CHECK],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_fully_patched_process_passes():
    assert run("from gevent import monkey; monkey.patch_all()\n") == "OK"


def test_unpatched_process_gets_a_clear_message():
    out = run("")
    assert out.startswith("ERROR gevent's monkey-patching is missing for socket, _thread")
    assert "wsbridge serve" in out and "monkey.patch_all()" in out
    assert "time.sleep() would block the process" in out


@pytest.mark.parametrize(
    ("patch", "missing"),
    [("thread=False", "_thread"), ("socket=False", "socket"), ("time=False", "time")],
)
def test_partial_patching_names_what_is_missing(patch, missing):
    out = run(f"from gevent import monkey; monkey.patch_all({patch})\n")
    assert out.startswith(f"ERROR gevent's monkey-patching is missing for {missing} ")
