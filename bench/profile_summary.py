#!/usr/bin/env python3
"""Summarize a py-spy ``--format raw`` profile (collapsed stacks) as two top lists.

    python bench/profile_summary.py bench/results/latest/profiles/wsbridge-fanout-3000.txt

``self`` is where the samples were taken (the leaf frame); ``inclusive`` is
every function on the stack (each counted once per sample). Line numbers are
dropped so a function's lines add up.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['func']} ({path})"


def summarize(path: Path, top: int) -> str:
    self_count: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")]
        self_count[frames[-1]] += n
        for name in set(frames):
            incl[name] += n
    out = [f"{path.name}: {total} samples"]
    for title, counter in (("self", self_count), ("inclusive", incl)):
        out.append(f"\n{title}:")
        for name, n in counter.most_common(top):
            out.append(f"  {100.0 * n / max(total, 1):5.1f}%  {name}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for p in args.profiles:
        print(summarize(p, args.top))


if __name__ == "__main__":
    main()
