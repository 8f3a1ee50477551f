"""protocol/ imports alone: no other wsbridge package, no I/O, no framework.

Every module under ``wsbridge/protocol/`` is found at run time (pkgutil), so a
new module is covered the day it is added. The import runs in a fresh
interpreter, so nothing the test run itself imported can hide a leak.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import wsbridge.protocol

#: Top-level modules protocol/ must never load: event loops, sockets, frameworks, Redis.
FORBIDDEN_TOP_LEVEL = (
    "gevent",
    "greenlet",
    "socket",
    "_socket",
    "ssl",
    "_ssl",
    "select",
    "selectors",
    "asyncio",
    "django",
    "redis",
)

#: The wsbridge modules protocol/ may load besides its own: the package's lazy
#: ``__init__`` and the exception tree.
ALLOWED_WSBRIDGE = {"wsbridge", "wsbridge.exceptions"}


def protocol_modules() -> list[str]:
    """``wsbridge.protocol`` and every module under it, found now (not listed by hand)."""
    found = pkgutil.walk_packages(wsbridge.protocol.__path__, "wsbridge.protocol.")
    return ["wsbridge.protocol", *sorted(info.name for info in found)]


def modules_loaded_by(names: list[str]) -> list[str]:
    """Import ``names`` in a fresh interpreter; return every name then in sys.modules."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_walk_finds_the_protocol_modules():
    modules = protocol_modules()
    assert "wsbridge.protocol.envelope" in modules
    assert "wsbridge.protocol.longpoll" in modules


def test_importing_every_protocol_module_loads_no_other_wsbridge_package():
    modules = protocol_modules()
    loaded = modules_loaded_by(modules)
    assert set(modules) <= set(loaded)
    others = [
        name
        for name in loaded
        if name.startswith("wsbridge.")
        and not name.startswith("wsbridge.protocol.")
        and name != "wsbridge.protocol"
        and name not in ALLOWED_WSBRIDGE
    ]
    assert others == []


def test_importing_every_protocol_module_loads_no_io_module():
    loaded = modules_loaded_by(protocol_modules())
    assert [name for name in loaded if name.split(".")[0] in FORBIDDEN_TOP_LEVEL] == []
