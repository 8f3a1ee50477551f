#!/usr/bin/env python3
"""The fan-out fast path proposed in docs/topics/performance.rst, as a patched copy.

    python3 bench/patches/fastpath.py /tmp/exp          # copy wsbridge/ there, patch it
    python3 bench/patches/fastpath.py /tmp/exp --diff   # ... and print the unified diff
    python3 bench/run.py --target wsbridge --workload fanout --clients 3000 --wsbridge-src /tmp/exp

Edits (each anchored on the current source; a missing anchor stops with an
error instead of patching blindly):

1. ``consumers/runner.py``: wake a connection's mailbox with
   ``gevent.spawn_raw`` instead of ``gevent.spawn`` (no Greenlet object, no
   spawn-tree bookkeeping: gevent records the spawning stack of every
   Greenlet by default).
2. ``transport/websocket.py``: when nothing is queued for the socket, write
   right away with a non-blocking ``send`` and spawn the writer greenlet
   only for what the kernel did not take.
3. ``transport/websocket.py``: when no extension was negotiated, frame an
   outgoing text message as header + payload (RFC 6455 section 5.2) instead
   of building websockets ``Frame`` objects.

The copy is made from the committed code (``git archive HEAD``; ``--worktree``
for the work tree as it is). The checkout itself is never modified.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SPAWN_RAW = (
    "consumers/runner.py",
    "            self._runner = gevent.spawn(self._drain)",
    "            # A raw greenlet: no Greenlet object and no spawn-tree bookkeeping;\n"
    "            # a fan-out wakes one mailbox per member, so this is the hot path.\n"
    "            self._runner = gevent.spawn_raw(self._drain)",
)

# --pump: instead of one greenlet per woken mailbox, one greenlet runs the woken
# mailboxes one after another; if a handler blocks (the pump yields to the hub),
# a callback hands the rest of the list to a new pump at once, so a slow consumer
# still delays only its own connection.
PUMP_WAKE = (
    "consumers/runner.py",
    "            self._runner = gevent.spawn(self._drain)",
    "            self._runner = _QUEUED\n"
    "            _READY.append(self)\n"
    "            if _PUMP[0] is None:\n"
    "                _PUMP[0] = gevent.spawn_raw(_pump)",
)
PUMP_DRAIN = (
    "consumers/runner.py",
    "        mailbox = self._mailbox\n        try:\n",
    "        mailbox = self._mailbox\n        self._runner = gevent.getcurrent()\n        try:\n",
)
PUMP_CODE = (
    "consumers/runner.py",
    "\n_QUEUED = object()  # Connection._runner while waiting for the pump\n",
    "\n_QUEUED = object()  # Connection._runner while waiting for the pump\n"
    "_READY: deque[Any] = deque()  # woken connections, in wake order\n"
    "_PUMP: list[Any] = [None]  # the greenlet running them, if any\n"
    "\n"
    "\n"
    "def _pump() -> None:\n"
    "    me = gevent.getcurrent()\n"
    "    # Runs only if this greenlet yields to the hub mid-list (a handler blocked).\n"
    "    watchdog = gevent.get_hub().loop.run_callback(_hand_off, me)\n"
    "    try:\n"
    "        while _READY and _PUMP[0] is me:\n"
    "            _READY.popleft()._drain()\n"
    "    finally:\n"
    "        watchdog.stop()\n"
    "        if _PUMP[0] is me:\n"
    "            _PUMP[0] = None\n"
    "            if _READY:\n"
    "                _PUMP[0] = gevent.spawn_raw(_pump)\n"
    "\n"
    "\n"
    "def _hand_off(blocked: Any) -> None:\n"
    "    # The pump is stuck in a handler: the rest of the list gets a new pump; the\n"
    "    # old greenlet finishes that one connection and ends.\n"
    "    if _PUMP[0] is blocked:\n"
    "        _PUMP[0] = gevent.spawn_raw(_pump) if _READY else None\n",
)

EDITS: list[tuple[str, str, str]] = [
    (
        "consumers/runner.py",
        "        if runner is not None and runner is not gevent.getcurrent():\n"
        "            runner.kill(block=False)",
        "        if runner is not None and runner is not _QUEUED \\\n"
        "                and runner is not gevent.getcurrent():\n"
        "            gevent.kill(runner)  # works on raw greenlets too",
    ),
    (
        "consumers/runner.py",
        "\nclass Connection:",
        "\n_QUEUED = object()  # Connection._runner while waiting for the pump\n"
        "\n\nclass Connection:",
    ),
    SPAWN_RAW,
    (
        "transport/websocket.py",
        "            if text is not None:\n"
        '                self.protocol.send_text(text.encode("utf-8"))\n',
        "            if text is not None:\n"
        '                payload = text.encode("utf-8")\n'
        "                protocol = self.protocol\n"
        "                if not protocol.extensions and not protocol.expect_continuation_frame:\n"
        "                    # No extension negotiated: an unmasked FIN text frame is a header\n"
        "                    # and the payload (RFC 6455 section 5.2); no Frame objects.\n"
        '                    # One chunk: an empty payload must not reach the outbox as b""\n'
        "                    # (the writer reads an empty chunk as websockets' EOF marker).\n"
        "                    self._queue((_text_header(len(payload)) + payload,))\n"
        "                    return\n"
        "                self.protocol.send_text(payload)\n",
    ),
    (
        "transport/websocket.py",
        "        if self._aborted:\n            return\n        pending = self._outbox_bytes\n",
        "        if self._aborted:\n"
        "            return\n"
        "        pending = self._outbox_bytes\n"
        "        if (\n"
        "            not pending\n"
        "            and self._writer is None\n"
        "            and not self._closing\n"
        "            and self.protocol.close_sent is None\n"
        "            and not self.protocol.eof_sent\n"
        "        ):\n"
        "            # Nothing waiting: write now, without a writer greenlet; only what\n"
        "            # the kernel does not take at once goes to the outbox.\n"
        "            chunks = list(chunks)\n"
        "            if chunks and all(chunks):\n"
        '                data = b"".join(chunks)\n'
        '                raw = getattr(self.sock, "_sock", None)  # gevent\'s non-blocking socket\n'
        "                try:\n"
        "                    sent = raw.send(data) if raw is not None else 0\n"
        "                except BlockingIOError:\n"
        "                    sent = 0\n"
        "                except OSError as exc:\n"
        '                    logger.debug("write to %s failed: %s", self._peer, exc)\n'
        "                    self._abort()\n"
        "                    return\n"
        "                self._bytes_sent += sent\n"
        "                if sent == len(data):\n"
        "                    return\n"
        "                chunks = [data[sent:]]\n",
    ),
    (
        "transport/websocket.py",
        "\nclass WebSocketTransport:",
        "\ndef _text_header(size: int) -> bytes:\n"
        "    if size < 126:\n"
        "        return bytes((0x81, size))\n"
        "    if size < 65536:\n"
        '        return bytes((0x81, 126)) + size.to_bytes(2, "big")\n'
        '    return bytes((0x81, 127)) + size.to_bytes(8, "big")\n'
        "\n"
        "\nclass WebSocketTransport:",
    ),
]


#: When an anchor is missing but this text is in the file, the proposal has
#: landed there in some form: the edit is skipped instead of failing.
UPSTREAM_MARKERS = {
    "consumers/runner.py": ("_QUEUED", "from .pump import"),  # the pump has its own module now
    "transport/websocket.py": ("_text_header", "frame_header(", "ws_outbound"),  # split out since
}


def copy_committed(target: Path, worktree: bool) -> None:
    """Copy wsbridge/ as committed (HEAD), or as in the work tree with ``--worktree``."""
    if not worktree:
        target.parent.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "wsbridge"],
            capture_output=True,
            check=False,
        )
        if archive.returncode == 0:
            untar = ["tar", "-x", "-C", str(target.parent)]
            subprocess.run(untar, input=archive.stdout, check=True)
            return
    shutil.copytree(REPO / "wsbridge", target, ignore=shutil.ignore_patterns("__pycache__"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dest", type=Path, help="folder to create the patched wsbridge/ in")
    parser.add_argument("--diff", action="store_true", help="print the unified diff")
    parser.add_argument(
        "--pump",
        action="store_true",
        help="one pump greenlet for woken mailboxes instead of spawn_raw per wake",
    )
    parser.add_argument(
        "--worktree",
        action="store_true",
        help="patch the work tree's wsbridge/ (uncommitted edits too) instead of HEAD's",
    )
    args = parser.parse_args()
    edits = list(EDITS)
    if args.pump:
        edits[edits.index(SPAWN_RAW)] = PUMP_WAKE
        edits += [PUMP_DRAIN, PUMP_CODE]
    target = args.dest / "wsbridge"
    if target.exists():
        shutil.rmtree(target)
    copy_committed(target, args.worktree)
    changed: dict[str, tuple[str, str]] = {}
    landed = set()
    for rel, markers in UPSTREAM_MARKERS.items():
        text = (target / rel).read_text()
        found = [m for m in markers if m in text]
        if found:
            # The change (or its own version of it) is already in the source.
            print(f"wsbridge/{rel} already has {found[0]!r}: left as it is", file=sys.stderr)
            landed.add(rel)
    for rel, old, new in edits:
        if rel in landed:
            continue
        path = target / rel
        text = path.read_text()
        if text.count(old) != 1:
            print(
                f"anchor not found once in wsbridge/{rel}: {old.splitlines()[0]!r}", file=sys.stderr
            )
            return 1
        before = changed.get(rel, (text, text))[0]
        text = text.replace(old, new)
        path.write_text(text)
        changed[rel] = (before, text)
    if args.diff:
        for rel, (before, after) in changed.items():
            sys.stdout.writelines(
                difflib.unified_diff(
                    before.splitlines(True),
                    after.splitlines(True),
                    f"a/wsbridge/{rel}",
                    f"b/wsbridge/{rel}",
                )
            )
    print(f"patched copy in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
