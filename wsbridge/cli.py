"""The ``wsbridge`` command: ``serve``, ``worker``, ``status``, ``check``, ``kick``.

Thin: it parses options and delegates. Each subcommand's work lives with
the code it drives (``transport.server``, ``worker``, ``status``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# subcommand -> (module, one-line help). The module provides
# ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS = {
    "serve": ("wsbridge.transport.server", "serve a WSGI app with WebSocket, long-poll on gevent"),
    "worker": ("wsbridge.worker", "run background channel consumers"),
    "status": ("wsbridge.status", "show the channel layer: shards, groups, members, queues"),
    "check": ("wsbridge.status", "check the set-up (monkey-patching, layer reachability)"),
    "kick": ("wsbridge.admin", "close connections by --user, --channel or --group (every process)"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="wsbridge",
        description="Realtime (WebSocket, long-poll, groups, background channels) for WSGI sites.",
    )
    parser.add_argument("--version", action="version", version=f"wsbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # that part of wsbridge is not in this checkout yet
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        adder(cmd)
        cmd.set_defaults(_module=module_name, _command=name)
    return parser


#: Subcommands that run on gevent: the standard library is monkey-patched
#: before any subcommand module (or the user's app) is imported.
GEVENT_COMMANDS = {"serve", "worker"}


def _patch_if_serving(argv: Sequence[str]) -> None:
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in GEVENT_COMMANDS:
        import gevent

        # Spawn-tree tracking costs ~10 us and ~2 KiB per greenlet; a server
        # spawning one per message does not need it (GEVENT_TRACK_GREENLET_TREE
        # in the environment still wins).
        if "GEVENT_TRACK_GREENLET_TREE" not in os.environ:
            gevent.config.track_greenlet_tree = False
        from gevent import monkey

        monkey.patch_all()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsbridge`` console script and ``python -m wsbridge``."""
    _patch_if_serving(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    runner = getattr(module, f"run_{args._command}", None) or module.run
    return int(runner(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
