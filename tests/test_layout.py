"""The shape of the house (docs/internals.rst): small modules, and a map that names real ones.

Issue 14's rule: no module under ``wsbridge/`` or ``contrib/`` over 600 lines;
split by responsibility, not by size alone. And every module docs/internals.rst
points a newcomer to must exist, so the map cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
INTERNALS = ROOT / "docs" / "internals.rst"


def python_modules() -> list[Path]:
    return sorted(
        path
        for top in ("wsbridge", "contrib")
        for path in (ROOT / top).rglob("*.py")
        if "migrations" not in path.parts
    )


def test_the_walk_finds_the_package():
    names = {path.relative_to(ROOT).as_posix() for path in python_modules()}
    assert "wsbridge/__init__.py" in names
    assert "contrib/django/wsbridge_django/apps.py" in names


def test_no_module_is_over_600_lines():
    too_long = {
        path.relative_to(ROOT).as_posix(): count
        for path in python_modules()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split by responsibility (at most {MAX_LINES} lines): {too_long}"


#: ``wsbridge.x.y`` or ``wsbridge_django.x`` written as a literal or a :mod: target.
DOTTED = re.compile(r"(?<![\w./])(wsbridge(?:_django)?(?:\.\w+)+)")
#: ``wsbridge/x/y.py`` or ``wsbridge/x/`` (a file or a package) written as a path.
PATH = re.compile(r"(?<![\w./])((?:wsbridge|contrib)/[\w/]*\w(?:\.py|/))")


def module_exists(dotted: str) -> bool:
    """True when ``dotted`` is a module or package, or a name defined in one (``mod.Class``)."""
    parts = dotted.split(".")
    base = ROOT / "contrib" / "django" if parts[0] == "wsbridge_django" else ROOT
    for end in range(len(parts), 0, -1):
        path = base.joinpath(*parts[:end])
        source = (
            path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        )
        if not source.is_file():
            continue
        if end == len(parts):
            return True
        name = re.escape(parts[end])
        defined = rf"^\s*(?:def|class) {name}\b|^{name}\b.*=|\bimport\b.*\b{name}\b|\"{name}\""
        return re.search(defined, source.read_text(encoding="utf-8"), re.M) is not None
    return False


def test_internals_names_only_modules_that_exist():
    text = INTERNALS.read_text(encoding="utf-8")
    dotted = sorted(set(DOTTED.findall(text)))
    paths = sorted(set(PATH.findall(text)))
    assert len(dotted) + len(paths) >= 20, "docs/internals.rst should name the modules it maps"
    # wsbridge.js is the browser client (wsbridge/static/wsbridge/), not a module
    missing = [name for name in dotted if name != "wsbridge.js" and not module_exists(name)]
    missing += [path for path in paths if not (ROOT / path).exists()]
    assert missing == [], f"docs/internals.rst names modules that do not exist: {missing}"


def parts_of_the_package() -> list[str]:
    """Every package under wsbridge/ (as ``wsbridge/x/``) and every top-level module."""
    package = ROOT / "wsbridge"
    packages = [
        path.parent.relative_to(ROOT).as_posix() + "/"
        for path in package.rglob("__init__.py")
        if path.parent != package
    ]
    modules = [
        f"wsbridge.{path.stem}"
        for path in package.glob("*.py")
        if not path.stem.startswith("_") or path.stem == "__main__"
    ]
    return sorted(packages + modules)


def test_internals_names_every_package_and_top_level_module():
    text = INTERNALS.read_text(encoding="utf-8")
    named = set(DOTTED.findall(text)) | set(PATH.findall(text))
    missing = [part for part in parts_of_the_package() if part not in named]
    assert missing == [], f"add to docs/internals.rst (what each holds): {missing}"
