#!/usr/bin/env python
"""`make demo`: the chat example (examples/chat) on wsbridge's embedded server.

Migrates a SQLite database kept in examples/chat/.tmp/ (ignored by git),
then runs ``wsbridge serve chatsite.wsgi``: one gevent process, the
in-memory channel layer, consumers in-process. Prints the URL to open;
Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

CHAT = Path(__file__).resolve().parent / "chat"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    (CHAT / ".tmp").mkdir(exist_ok=True)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="chatsite.settings")
    env.setdefault("CHAT_DB", str(CHAT / ".tmp" / "chat.sqlite3"))
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=CHAT, env=env)
    if migrate.returncode:
        return migrate.returncode
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"\n  wsbridge chat demo: open http://{host}:{args.port}/ in two browser windows,")
    print("  enter the same room in both, and type. Ctrl-C stops the server.\n", flush=True)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "serve",
            "chatsite.wsgi",
            "--host",
            args.host,
            "--port",
            str(args.port),
        ],
        cwd=CHAT,
        env=env,
    )
    # Stopping the demo stops its server too (Ctrl-C, or SIGTERM from a supervisor).
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait(15)


if __name__ == "__main__":
    sys.exit(main())
