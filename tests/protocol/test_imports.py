"""protocol/ is sans-I/O: importing it loads no gevent, socket, Django or Redis module."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "gevent",
    "socket",
    "_socket",
    "ssl",
    "select",
    "selectors",
    "django",
    "redis",
    "asyncio",
)


def test_importing_wsbridge_protocol_loads_no_io_module():
    code = (
        "import json, sys\n"
        "import wsbridge.protocol, wsbridge.protocol.envelope, wsbridge.protocol.longpoll\n"
        "import wsbridge.protocol.longpoll_client, wsbridge.protocol.longpoll_token\n"
        "import wsbridge.protocol.longpoll_messages\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    bad = [name for name in loaded if name.split(".")[0] in FORBIDDEN]
    assert bad == []
    assert "wsbridge.protocol.longpoll" in loaded
