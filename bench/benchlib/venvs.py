"""Virtualenvs: one per peer under ``bench/.venvs/<name>``, the project's own for wsbridge.

Each peer installs from PyPI with pip from ``bench/requirements/<name>.txt``;
a stamp file holding the requirements' text makes the next run skip pip
until the requirements change. The load client's ``node_modules`` is
installed from the committed ``package-lock.json`` with ``npm ci``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import BENCH_DIR, REPO_DIR, VENVS_DIR

PEER_VENVS = ("channels", "socketio", "raw", "tools")
STAMP = ".bench-installed"


def project_python() -> Path:
    """The wsbridge project's venv python (``make test`` creates it)."""
    python = REPO_DIR / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make test` or create the venv first")
    return python


def venv_python(name: str) -> Path:
    """Python of venv ``name``: ``wsbridge`` means the project's venv."""
    if name == "wsbridge":
        return project_python()
    return VENVS_DIR / name / "bin" / "python"


def venv_bin(name: str, tool: str) -> Path:
    """A console script of venv ``name``."""
    return venv_python(name).parent / tool


def base_python() -> str:
    """The interpreter the peer venvs are made from (the one running the bench)."""
    # sys.executable may itself be a venv python; venv resolves the base itself.
    return os.environ.get("BENCH_BASE_PYTHON", sys.executable)


def ensure_venv(name: str, *, quiet: bool = True) -> Path:
    """Create/update ``bench/.venvs/<name>`` from its requirements; return its python."""
    if name == "wsbridge":
        return project_python()
    req = BENCH_DIR / "requirements" / f"{name}.txt"
    want = req.read_text()
    root = VENVS_DIR / name
    stamp = root / STAMP
    python = root / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        print(f"[venv] creating {root}", flush=True)
        subprocess.run([base_python(), "-m", "venv", str(root)], check=True)
    print(f"[venv] installing {req.name} into {root}", flush=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run([*pip, "-U", "pip", "wheel"], check=True)
    subprocess.run([*pip, "-r", str(req)], check=True)
    stamp.write_text(want)
    return python


def ensure_loadclient() -> Path:
    """``npm ci`` the load client when its node_modules is missing; return client.js."""
    root = BENCH_DIR / "loadclient"
    if not (root / "node_modules" / "ws").exists():
        print("[npm] installing the load client (npm ci)", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=root, check=True)
    return root / "client.js"


def installed_versions(name: str, packages: list[str]) -> dict[str, str]:
    """``{package: version}`` as installed in venv ``name`` (missing ones left out)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    import json

    res = subprocess.run(
        [str(venv_python(name)), "-c", code, *packages], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout)
