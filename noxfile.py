"""The supported-versions matrix: Python x Django x oldest/newest dependencies.

``make test-matrix`` runs the whole suite on every combination
(``nox -s full``); ``make test`` runs the whole suite in ``.venv`` (the
default combination) and then the smoke subset on every other combination
(``nox -s smoke``). The table in docs/topics/versions.rst is this matrix.

* ``oldest`` pins gevent, websockets and redis-py to the lowest release
  series ``setup.py`` allows (read from setup.py: one source for each fact);
  ``newest`` lets the resolver take the newest release each allows.
* Environments live outside the clone (``$WSBRIDGE_NOX_CACHE``, default
  ``~/.cache/wsbridge/nox``) and are reused while a hash of setup.py,
  pyproject.toml and the combination matches, so a fresh clone (CI) reuses
  them too; wsbridge itself is reinstalled (editable, no deps) on every run
  so the environment always points at the clone being tested.
* uv installs (``venv_backend="uv"``) when it is importable next to nox:
  a cold environment takes seconds instead of minutes; pip otherwise.

Run one combination: ``nox -s "full(py3.10-dj3.2-oldest)"``; list them with ``nox -l``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import nox

HERE = Path(__file__).parent
CACHE = Path(os.environ.get("WSBRIDGE_NOX_CACHE", "~/.cache/wsbridge/nox")).expanduser()

# (python, django series, dependency variant); the first row is the default
# combination, the one `make test` runs in .venv.
DEFAULT = ("3.11", "5.2", "newest")
MATRIX = [
    DEFAULT,
    ("3.10", "3.2", "oldest"),
    ("3.10", "4.2", "oldest"),
    ("3.10", "5.2", "newest"),
    ("3.11", "4.2", "newest"),
    ("3.12", "4.2", "newest"),
    ("3.12", "5.2", "newest"),
    ("3.12", "6.0", "newest"),
    ("3.13", "5.2", "newest"),
    ("3.13", "6.0", "newest"),
]

# The fast subset run on every non-default combination by `make test`:
# WebSocket chat, long-poll, the Redis layer, Django auth.
SMOKE = [
    "examples/chat/tests/test_chat.py",
    "tests/transport/test_longpoll.py",
    "tests/layers/test_redis.py",
    "tests/django/test_django_auth.py",
]

# Test tools pinned for Django 3.2: channels 4.2 requires Django 4.2 (the interop tests
# need a channels that installs), and pytest-django 4.9 is the release the 3.2 rows were
# made green with (none of 4.9+ lists 3.2; newer ones are untested there).
OLD_DJANGO_PINS = {"3.2": ["pytest-django<4.10", "channels<4.2"]}

nox.options.envdir = str(CACHE)
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


def _add_pyenv_to_path() -> None:
    # pyenv's shims answer only for the selected versions: put every installed
    # interpreter's own bin/ first so `python3.X` resolves whatever is selected.
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    bins = sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin")))
    if bins:
        os.environ["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])


_add_pyenv_to_path()

try:
    import uv  # noqa: F401  (only asks whether the uv backend can be used)

    BACKEND = "uv"
except ImportError:
    BACKEND = "virtualenv" if shutil.which("virtualenv") else "venv"


def _oldest_pins() -> list[str]:
    """The lowest release series setup.py allows for gevent, websockets and redis-py."""
    text = (HERE / "setup.py").read_text()
    pins = []
    for name in ("gevent", "websockets", "redis"):
        found = re.search(rf'"{name}>=([0-9.]+)', text)
        if found is None:
            raise RuntimeError(f"setup.py declares no lower bound for {name}")
        pins.append(f"{name}=={found.group(1)}.*")
    return pins


def _requirements(django: str, deps: str) -> list[str]:
    reqs = [f"django=={django}.*", *OLD_DJANGO_PINS.get(django, [])]
    if deps == "oldest":
        reqs += _oldest_pins()
    return reqs


def _stamp(python: str, django: str, deps: str) -> str:
    digest = hashlib.sha256()
    for name in ("setup.py", "pyproject.toml", "noxfile.py"):
        digest.update((HERE / name).read_bytes())
    digest.update(json.dumps([python, django, deps, BACKEND]).encode())
    return digest.hexdigest()


def _install(session: nox.Session, python: str, django: str, deps: str) -> None:
    stamp_file = Path(session.virtualenv.location) / ".wsbridge-stamp"
    stamp = _stamp(python, django, deps)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        # Dependencies are current: only point the editable install at this clone.
        session.install("--no-deps", "-e", ".")
        return
    # pip and setuptools too: uv's environments come without them, and
    # tests/test_packaging.py builds the wheel (--no-build-isolation, so setuptools
    # must be there) and a clean venv with pip, as a user would.
    session.install(
        "pip", "setuptools", "-e", ".[dev,redis,django,uwsgi]", *_requirements(django, deps)
    )
    stamp_file.write_text(stamp)


def _params(rows: list[tuple[str, str, str]]) -> list[object]:
    return [nox.param(p, d, v, id=f"py{p}-dj{d}-{v}") for p, d, v in rows]


def _run(session: nox.Session, django: str, deps: str, paths: list[str]) -> None:
    python = str(session.python)
    _install(session, python, django, deps)
    session.run("python", "-c", _VERSIONS)
    session.run("python", "-m", "pytest", *paths, *session.posargs)


# One line in the log naming what is under test.
_VERSIONS = (
    "import sys, django, gevent, websockets, redis; "
    "print('versions: python', sys.version.split()[0], 'django', django.get_version(), "
    "'gevent', gevent.__version__, 'websockets', websockets.__version__, "
    "'redis', redis.__version__)"
)


@nox.session(venv_backend=BACKEND)
@nox.parametrize(("python", "django", "deps"), _params(MATRIX))
def full(session: nox.Session, django: str, deps: str) -> None:
    """The whole suite on one combination."""
    _run(session, django, deps, [])


@nox.session(venv_backend=BACKEND)
@nox.parametrize(("python", "django", "deps"), _params(MATRIX[1:]))
def smoke(session: nox.Session, django: str, deps: str) -> None:
    """The smoke subset on one non-default combination (the default runs in .venv)."""
    _run(session, django, deps, SMOKE)
