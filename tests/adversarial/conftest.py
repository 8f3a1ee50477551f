"""The attack suite's servers: the plain site and the Django test site, each a real process.

``site`` is parametrized over both: every test taking it runs against
``wsbridge serve tests.adversarial.target_app:application`` and against
``wsbridge serve djtest.wsgi`` (tests/django: sessions, auth, Origin from
``ALLOWED_HOSTS``), both with a 1 s header timeout and a 2 s keep-alive
timeout so slow peers are dropped within the suite's time budget.

Hypothesis profiles: ``ci`` (the default: ``WSBRIDGE_FUZZ_EXAMPLES``
examples per target, 40 unless set, derandomized so CI is repeatable) and
``fuzz`` (``make fuzz``: random, as many examples as asked). Figures
(examples per target, statuses and close codes seen, p99s, FDs, RSS) are
printed at the end of the run and written to ``$WSBRIDGE_FUZZ_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.adversarial.harness import FIGURES, MEASURES, Baseline, assert_clean_log, log_since
from tests.conftest import start_wsbridge_serve

HERE = Path(__file__).resolve().parent
DJANGO_DIR = HERE.parent / "django"

_COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
EXAMPLES = int(os.environ.get("WSBRIDGE_FUZZ_EXAMPLES", "40"))
settings.register_profile("ci", max_examples=EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=EXAMPLES, **_COMMON)
settings.load_profile(os.environ.get("WSBRIDGE_FUZZ_PROFILE", "ci"))


@dataclass
class Site:
    """One server under attack."""

    name: str
    port: int
    pid: int
    log_path: Path
    #: A Cookie header of a logged-in user (Django), else None.
    cookie: str | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        return log_since(self.log_path, offset)


def _django_site(tmp: Path) -> Iterator[Site]:
    if str(DJANGO_DIR) not in sys.path:
        sys.path.insert(0, str(DJANGO_DIR))
    from djclient import login_cookie
    from djtest_server import PY, DjangoServer, base_env, manage

    env = base_env(WSBRIDGE_TEST_DB=f"sqlite:{tmp / 'db.sqlite3'}")
    manage("migrate", "-v", "0", env=env)
    manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('ada', password='pw')",
        env=env,
    )
    command = [
        PY,
        "-m",
        "wsbridge",
        "serve",
        "djtest.wsgi",
        "--port",
        "0",
        "--header-timeout",
        "1",
        "--keepalive-timeout",
        "2",
    ]
    server = DjangoServer(command, env)
    with server:
        assert server.proc is not None and server.port is not None
        cookie = login_cookie(server.url, "ada", "pw")
        yield Site("django", server.port, server.proc.pid, Path(server._log.name), cookie)


def _plain_site(tmp: Path) -> Iterator[Site]:
    served = start_wsbridge_serve(
        "tests.adversarial.target_app:application",
        tmp,
        "--header-timeout",
        "1",
        "--keepalive-timeout",
        "2",
    )
    try:
        yield Site("plain", served.port, served.pid, served.log_path)
    finally:
        served.stop()


@pytest.fixture(scope="session", params=["plain", "django"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """Each server under attack, started once per session."""
    tmp = tmp_path_factory.mktemp(f"adversarial-{request.param}")
    factory = _plain_site if request.param == "plain" else _django_site
    yield from factory(tmp)


@pytest.fixture(scope="session")
def plain_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The plain site only (targets the Django project has no route for)."""
    yield from _plain_site(tmp_path_factory.mktemp("adversarial-plain-only"))


@pytest.fixture
def watched(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Asserts after the test: no traceback / 500 in the server log, FDs and RSS near baseline."""
    site = (
        request.getfixturevalue("site")
        if "site" in request.fixturenames
        else (request.getfixturevalue("plain_site"))
    )
    offset = site.log_offset()
    baseline = Baseline.take(site.pid)
    yield site
    figures = baseline.check()
    MEASURES.setdefault("resources", {})[f"{request.node.name}"] = figures
    assert_clean_log(site.log_since(offset))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES and not MEASURES:
        return
    report = {
        "targets": {
            name: {"examples": entry["examples"], "seen": dict(entry["seen"])}
            for name, entry in sorted(FIGURES.items())
        },
        **MEASURES,
    }
    terminalreporter.section("attack suite figures")
    for name, entry in report["targets"].items():
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(entry["seen"].items()))
        terminalreporter.write_line(f"{name}: {entry['examples']} inputs; {seen}")
    for key, value in MEASURES.items():
        terminalreporter.write_line(f"{key}: {json.dumps(value, sort_keys=True)}")
    path = os.environ.get("WSBRIDGE_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps(report, indent=2, sort_keys=True))
