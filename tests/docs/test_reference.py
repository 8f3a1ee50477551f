"""The reference is complete and the docs build cleanly.

``make docs`` builds nitpicky with warnings as errors; this runs the same build
(into a temp dir) so that CI catches a broken reference, then reads the
inventory the build wrote (``objects.inv``) to check that every public name is
documented: ``wsbridge.__all__`` and every public module of ``wsbridge_django``
with the public classes and functions it defines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sphinx.util.inventory import InventoryFile

import wsbridge

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 180.0


def clean_env() -> dict[str, str]:
    """This process's environment without the test run's Django and pytest settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Build the docs as ``make docs`` does; return {role: names} of what they document."""
    out = tmp_path_factory.mktemp("html")
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-n",
        "-W",
        "--keep-going",
        "-q",
        "-E",
        "-d",
        str(out / ".doctrees"),
        "-b",
        "html",
        str(ROOT / "docs"),
        str(out),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0 and not warnings, (
        "the nitpicky docs build (make docs) failed:\n" + "\n".join(warnings or [proc.stderr])
    )
    with open(out / "objects.inv", "rb") as stream:
        data = InventoryFile.load(stream, "", lambda base, uri: uri)
    return {role: set(entries) for role, entries in data.items()}


def documented(inventory: dict[str, set[str]], name: str) -> bool:
    return any(name in names for role, names in inventory.items() if role.startswith("py:"))


def reference_names(obj: object, exported_as: str) -> list[str]:
    """The names under which ``obj`` may be documented."""
    names = [exported_as]
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module and qualname:
        names.append(f"{module}.{qualname}")
    return names


def test_every_name_of_wsbridge_all_is_in_the_reference(inventory):
    missing = [
        name
        for name in wsbridge.__all__
        if name != "__version__"
        and not any(
            documented(inventory, n)
            for n in reference_names(getattr(wsbridge, name), f"wsbridge.{name}")
        )
    ]
    assert not missing, f"add to docs/reference/api.rst: {', '.join(missing)}"


#: Run in a fresh interpreter: importing every module of the Django app needs
#: Django set up, which this test process must not do (tests/django does it).
LIST_DJANGO_API = """
import importlib, inspect, json, pkgutil, sys
sys.path.insert(0, "docs")
import conf  # the docs' own Django set-up
import wsbridge_django
api = {}
for info in pkgutil.walk_packages(wsbridge_django.__path__, "wsbridge_django."):
    if any(part.startswith("_") for part in info.name.split(".")) or info.ispkg:
        continue
    module = importlib.import_module(info.name)
    if hasattr(module, "__all__"):
        names = list(module.__all__)
    else:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(obj) or inspect.isfunction(obj))
                 and obj.__module__ == info.name]
    api[info.name] = names
print(json.dumps(api))
"""


@pytest.fixture(scope="module")
def django_api() -> dict[str, list[str]]:
    """{public module of wsbridge_django: the public names it defines}."""
    proc = subprocess.run(
        [sys.executable, "-c", LIST_DJANGO_API],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_public_modules_of_wsbridge_django_are_found(django_api):
    assert "wsbridge_django.wsgi" in django_api
    assert "wsbridge_django.management.commands.runworker" in django_api
    assert "get_wsgi_application" in django_api["wsbridge_django.wsgi"]
    assert len(django_api) >= 15


def test_every_public_module_of_wsbridge_django_is_in_the_reference(inventory, django_api):
    modules = inventory.get("py:module", set())
    missing_modules = [m for m in django_api if m not in modules]
    assert not missing_modules, f"add to docs/reference/django.rst: {', '.join(missing_modules)}"
    missing = [
        f"{m}.{name}"
        for m, names in django_api.items()
        if ".management." not in m
        for name in names
        if not documented(inventory, f"{m}.{name}")
    ]
    assert not missing, (
        "documented nowhere (give them a docstring, or list them in the "
        f"module's __all__ without them): {', '.join(missing)}"
    )
