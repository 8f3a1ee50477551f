"""Docs that run: every python code block of docs/**/*.rst is executed.

One test per page: ``tests/docs/runpage.py`` runs the page's blocks in a
fresh interpreter whose cwd is a fresh temp dir (rules in its docstring), so
a page cannot drift from the code. A failure names the page, the line and the
error, e.g. ``docs/tutorial.rst:80: NameError: name 'router' is not defined``.

A second test per page refuses python hidden in bare ``::`` blocks (Sphinx
highlights them as python, the harness would not run them): write
``.. code-block:: python`` (runs), add ``:class: no-run`` for other projects'
code, or name the language (``console``, ``json``, ``text``...).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rstblocks

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
RUNNER = Path(__file__).with_name("runpage.py")
#: per page; the tutorial runs its own pytest inside
PAGE_TIMEOUT = 180.0


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_pages_are_found():
    assert DOCS / "tutorial.rst" in PAGES
    assert len(PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_runs(page: Path, tmp_path: Path) -> None:
    blocks = rstblocks.parse(page)
    if not any(b.language in ("python", "python3", "py") for b in blocks):
        return  # nothing to run; the bare-block guard below still applies
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, str(RUNNER), str(page), page_id(page)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{page_id(page)}: its blocks did not finish in {PAGE_TIMEOUT:.0f} s", pytrace=False
        )
    if proc.returncode != 0:
        report = proc.stderr.strip() or proc.stdout.strip()
        pytest.fail(f"{report}\n--- stdout ---\n{proc.stdout[-3000:]}", pytrace=False)


def looks_like_python(code: str) -> bool:
    """True for code that parses as python and is more than a data literal."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(
        not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body
    )


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_python_in_bare_literal_blocks(page: Path) -> None:
    hidden = [
        f"{page_id(page)}:{b.line}"
        for b in rstblocks.parse(page)
        if b.language is None and looks_like_python(b.code)
    ]
    assert not hidden, (
        f"python in bare '::' blocks at {', '.join(hidden)}: the docs harness does not run "
        "them; write '.. code-block:: python' (or add ':class: no-run' for other projects' "
        "code), or name the language ('console', 'json', 'text')"
    )


def test_looks_like_python_tells_code_from_data_and_shell():
    assert looks_like_python("import wsbridge\n")
    assert looks_like_python("print('hi')\n")
    assert not looks_like_python('{"seq": 7, "text": "hello"}\n')
    assert not looks_like_python("wsbridge serve myapp\n")


def test_a_failing_block_names_page_line_and_error(tmp_path: Path) -> None:
    page = tmp_path / "bad.rst"
    page.write_text("Bad\n===\n\n.. code-block:: python\n\n   x = 1\n   print(y)\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(page), "docs/bad.rst"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "DOCS FAILURE: docs/bad.rst:7: NameError: name 'y' is not defined" in proc.stderr


def test_captions_write_files_no_run_compiles_and_page_tests_run(tmp_path: Path) -> None:
    page = tmp_path / "good.rst"
    page.write_text(
        "Good\n====\n\n"
        ".. code-block:: python\n   :caption: pkg/mod.py\n\n   VALUE = 41\n\n"
        ".. code-block:: python\n   :class: no-run\n\n   import not_installed_anywhere\n\n"
        ".. code-block:: python\n\n   from pkg.mod import VALUE\n   ANSWER = VALUE + 1\n\n"
        ".. code-block:: python\n\n   assert ANSWER == 42\n\n"
        ".. code-block:: python\n   :caption: test_mod.py\n\n"
        "   from pkg.mod import VALUE\n\n   def test_value():\n       assert VALUE == 40\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(page), "docs/good.rst"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # the page's own test is wrong (41 != 40): the harness must say so
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pytest on the test files this page writes (test_mod.py) failed" in proc.stderr
    assert (work / "pkg" / "mod.py").read_text() == "VALUE = 41\n"
    assert "not_installed_anywhere" not in proc.stderr


def test_a_no_run_block_must_still_compile(tmp_path: Path) -> None:
    page = tmp_path / "syntax.rst"
    page.write_text("S\n=\n\ntext\n\n.. code-block:: python\n   :class: no-run\n\n   def f(:\n")
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(page), "docs/syntax.rst"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "DOCS FAILURE: docs/syntax.rst:9: SyntaxError" in proc.stderr
