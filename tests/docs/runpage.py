"""Run the python blocks of one docs page, as the docs harness does.

Usage (cwd must be a fresh, empty directory)::

    python tests/docs/runpage.py docs/tutorial.rst

The rules, which every page must obey (docs/changelog.rst and COMMON rules):

* every ``.. code-block:: python`` block runs, in page order, in one
  namespace (one module), in this process; the cwd is on ``sys.path``;
* a block with ``:caption: some/path.py`` is written to that file (relative
  to the cwd) instead of being run; later blocks can import it;
* a block with ``:class: no-run`` is only compiled;
* after the blocks, the test files the page wrote (``test_*.py``,
  ``*_test.py``) are run with pytest in the cwd and must pass.

On the first failure it prints ``DOCS FAILURE: page:line: what`` and the
traceback of the page's own code, and exits 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rstblocks  # noqa: E402

sys.path.pop(0)

PYTHON = ("python", "python3", "py")
PYTEST_TIMEOUT = 120.0


def fail(where: str, what: str, detail: str = "") -> None:
    """Report the first failure of the page and stop."""
    sys.stdout.flush()
    print(f"DOCS FAILURE: {where}: {what}", file=sys.stderr)
    if detail:
        print(detail.rstrip(), file=sys.stderr)
    if WRITTEN:
        print(
            "files this page wrote (its :caption: blocks): "
            + ", ".join(f"{name} <- {at}" for name, at in WRITTEN.items()),
            file=sys.stderr,
        )
    sys.exit(1)


def page_traceback(exc: BaseException, page: str) -> str:
    """The traceback from the first frame of the page's code on."""
    frames = traceback.extract_tb(exc.__traceback__)
    start = next((i for i, f in enumerate(frames) if f.filename == page), 0)
    lines = traceback.format_list(frames[start:])
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


#: file written -> the page line of the block that wrote it, for failure messages
WRITTEN: dict[str, str] = {}


def run_blocks(page: Path, display: str) -> list[Path]:
    """Write, compile or run each python block; return the test files written."""
    module = types.ModuleType("docpage")
    module.__file__ = str(Path.cwd() / "docpage.py")
    sys.modules["docpage"] = module
    tests: list[Path] = []
    for block in rstblocks.parse(page):
        if block.language not in PYTHON:
            continue
        where = f"{display}:{block.line}"
        # pad so that line numbers in tracebacks are the page's own
        source = "\n" * (block.line - 1) + block.code + "\n"
        try:
            code = compile(source, display, "exec")
        except SyntaxError as exc:
            fail(
                f"{display}:{exc.lineno}",
                f"SyntaxError in the block at line {block.line}: {exc.msg}",
                page_traceback(exc, display),
            )
        if block.caption:
            target = Path(block.caption)
            if target.is_absolute() or ".." in target.parts:
                fail(
                    where, f":caption: {block.caption} must be a relative path inside the temp dir"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code + "\n", encoding="utf-8")
            WRITTEN[block.caption] = where
            if target.name.startswith("test_") or target.stem.endswith("_test"):
                tests.append(target)
            continue
        if "no-run" in block.classes:
            continue
        try:
            exec(code, module.__dict__)
        except SystemExit as exc:
            if exc.code not in (0, None):
                fail(where, f"the block at line {block.line} exited with {exc.code!r}")
        except BaseException as exc:  # noqa: BLE001 - report whatever the page raised
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == display]
            at = f"{display}:{frames[-1].lineno}" if frames else where
            fail(
                at,
                f"{type(exc).__name__}: {exc} (in the block at line {block.line})",
                page_traceback(exc, display),
            )
    return tests


def run_tests(tests: list[Path], display: str) -> None:
    """Run the page's test files with pytest; every test must pass."""
    names = [str(t) for t in sorted(set(tests))]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ".", *names]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PYTEST_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        fail(display, f"pytest {' '.join(names)} did not finish in {PYTEST_TIMEOUT:.0f} s", output)
    if proc.returncode != 0:
        fail(
            display,
            f"pytest on the test files this page writes ({', '.join(names)}) "
            f"failed (exit {proc.returncode})",
            proc.stdout + proc.stderr,
        )
    print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "pytest: no output")


def main() -> None:
    page = Path(sys.argv[1]).resolve()
    display = sys.argv[2] if len(sys.argv) > 2 else str(page)
    sys.path.insert(0, os.getcwd())
    tests = run_blocks(page, display)
    if tests:
        run_tests(tests, display)


if __name__ == "__main__":
    main()
