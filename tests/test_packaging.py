"""The package users install: ``wsbridge-gevent``, built here, installed in a clean venv.

Builds the wheel and the sdist from this checkout, checks the name and the
LICENSE in both, installs the wheel in a fresh venv (pip may use its local
cache; bounded in time) and, from a directory outside the checkout, runs a
WebSocket round trip through the installed ``wsbridge serve``, then checks
that a missing extra names itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.slow

APP = """
from wsbridge import WebsocketConsumer, router


@router.websocket("echo/")
class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data="echo: " + text_data)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain page"]
"""


def run(*command: str | Path, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("build")
    # No build isolation: the dev venv's setuptools, so the build needs no index.
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        ROOT,
        cwd=work,
    )
    run(
        sys.executable,
        "setup.py",
        "-q",
        "egg_info",
        "--egg-base",
        work,
        "sdist",
        "-d",
        out,
        cwd=ROOT,
    )
    wheel = next(out.glob("*.whl"))
    sdist = next(out.glob("*.tar.gz"))
    return {"wheel": wheel, "sdist": sdist}


def test_distribution_is_wsbridge_gevent_with_its_licence_in_wheel_and_sdist(built):
    wheel, sdist = built["wheel"], built["sdist"]
    assert wheel.name.startswith("wsbridge_gevent-"), wheel.name
    assert sdist.name.startswith("wsbridge_gevent-"), sdist.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert any(
        n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names
    ), names
    assert "wsbridge/__init__.py" in names and "wsbridge_django/__init__.py" in names
    text = metadata.decode()
    assert "Name: wsbridge-gevent" in text
    assert "Project-URL: Source," in text
    assert "Provides-Extra: gunicorn" in text and "gunicorn[gevent]" in text
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/LICENSE") for name in archive.getnames())
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()


def test_the_wheel_in_a_clean_venv_serves_a_websocket_round_trip(built, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", built["wheel"])
    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_site.py").write_text(APP)
    # Outside the checkout, no PYTHONPATH: only what the wheel installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(py, "-c", "import wsbridge; print(wsbridge.__file__)", cwd=site, env=env)
    assert str(venv) in where.stdout
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child owns it
    server = subprocess.Popen(
        [venv / "bin" / "wsbridge", "serve", "echo_site", "--port", str(port)],
        cwd=site,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for_port(port, proc=server)
        with connect(f"ws://127.0.0.1:{port}/echo/", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "echo: hello"
    finally:
        server.terminate()
        server.wait(10)
    # redis is not installed (no extra): the error names the extra to install.
    done = subprocess.run(
        [venv / "bin" / "wsbridge", "status", "--layer", "redis://127.0.0.1:6379/0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=site,
        env=env,
    )
    assert done.returncode == 2
    assert 'pip install "wsbridge-gevent[redis]"' in done.stderr, done.stderr
