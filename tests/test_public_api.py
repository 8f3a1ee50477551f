"""The public API guard: what ``wsbridge`` exports, and the import arrows that must not exist.

Changing ``wsbridge.__all__`` is a decision: update EXPECTED here and the
changelog in the same commit.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import wsbridge

EXPECTED = {
    "__version__",
    # routing
    "router",
    "Router",
    "URLRouter",
    "path",
    "re_path",
    "include",
    "route",
    "route_class",
    "ChannelNameRouter",
    "ProtocolTypeRouter",
    # consumers
    "BaseConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketDemultiplexer",
    "HttpConsumer",
    "SseConsumer",
    # background channels
    "Worker",
    # Channels 1.x
    "Channel",
    "Group",
    "Message",
    # layers
    "get_channel_layer",
    "set_channel_layer",
    # Channels 4 code: asgiref's adapters, calling sync code directly
    "async_to_sync",
    "sync_to_async",
    # identity (wsbridge.identity, loaded on first use)
    "send_to_user",
    "revoke_user",
    "kick",
    # serving
    "wrap",
    "serve",
    # errors
    "WSBridgeError",
    "ConfigurationError",
    "AcceptConnection",
    "DenyConnection",
    "StopConsumer",
    "ChannelFull",
    "InvalidChannelName",
    "LayerUnavailable",
}

#: Top-level modules that mean I/O (or a framework) was imported.
IO_MODULES = (
    "gevent",
    "greenlet",
    "socket",
    "_socket",
    "ssl",
    "select",
    "selectors",
    "django",
    "redis",
    "msgpack_numpy",
)


def loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the names in sys.modules afterwards."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_all_is_exactly_the_documented_public_api():
    assert len(wsbridge.__all__) == len(set(wsbridge.__all__)), "duplicates in __all__"
    assert set(wsbridge.__all__) == EXPECTED


def test_every_public_name_resolves():
    for name in wsbridge.__all__:
        assert getattr(wsbridge, name) is not None, name
    assert wsbridge.Worker.__module__ == "wsbridge.worker"


def test_importing_the_protocol_loads_no_io_module():
    loaded = loaded_after("import wsbridge.protocol.envelope, wsbridge.protocol.longpoll")
    offending = [m for m in loaded if m.split(".")[0] in IO_MODULES]
    assert offending == []
    assert "wsbridge.protocol.longpoll" in loaded


def test_importing_wsbridge_itself_loads_no_io_module():
    loaded = loaded_after("import wsbridge")
    assert [m for m in loaded if m.split(".")[0] in IO_MODULES] == []


def test_importing_wsbridge_loads_only_its_init():
    # the public names are loaded on first use (PEP 562), so wsbridge.protocol imports alone
    loaded = loaded_after("import wsbridge")
    assert [m for m in loaded if m.startswith("wsbridge")] == ["wsbridge"]


def test_a_public_name_loads_its_module_on_first_use():
    loaded = loaded_after("import wsbridge\nwsbridge.Group")
    assert "wsbridge.consumers.message" in loaded
    assert "wsbridge.worker" not in loaded


def test_star_import_gives_every_public_name():
    code = (
        "import json\n"
        "namespace = {}\n"
        "exec('from wsbridge import *', namespace)\n"
        "print(json.dumps(sorted(k for k in namespace if k != '__builtins__')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert set(json.loads(out.stdout.strip().splitlines()[-1])) == EXPECTED


def test_the_type_checking_imports_repeat_the_exports_table():
    # wsbridge/__init__.py imports every public name under TYPE_CHECKING for mypy and
    # editors; at run time _EXPORTS is what counts. The two must name the same things.
    tree = ast.parse(Path(wsbridge.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    imported = {
        alias.name: f"wsbridge.{node.module}"
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        for alias in node.names
        if alias.asname == alias.name  # "X as X": re-exported under mypy --strict
    }
    assert imported == wsbridge._EXPORTS


def test_dir_lists_the_public_names_before_they_are_loaded():
    assert set(wsbridge.__all__) <= set(dir(wsbridge))


def test_no_wsbridge_module_imports_django_and_layers_never_import_transport():
    code = (
        "import importlib, pkgutil, wsbridge\n"
        "for info in pkgutil.walk_packages(wsbridge.__path__, 'wsbridge.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
    )
    loaded = loaded_after(code)
    assert "wsbridge.consumers.routing" in loaded and "wsbridge.worker" in loaded
    assert [m for m in loaded if m.split(".")[0] == "django"] == []
    layers_only = loaded_after(
        "import importlib, pkgutil, wsbridge.layers\n"
        "for info in pkgutil.walk_packages(wsbridge.layers.__path__, 'wsbridge.layers.'):\n"
        "    importlib.import_module(info.name)\n"
    )
    assert [m for m in layers_only if m.startswith(("wsbridge.transport", "django"))] == []
