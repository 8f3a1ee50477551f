"""The ``wsbridge`` command: ``serve``, ``worker``, ``status``, ``check``, ``kick``.

Thin: it parses options and delegates. Each subcommand's work lives with
the code it drives (``transport.servers``, ``worker``, ``status``). This is
also where ``wsbridge serve`` is wired to the embedded worker
(:func:`serve`): the server knows nothing of background channels.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser", "serve", "add_serve_arguments", "run_serve"]

# subcommand -> (module, one-line help). The module provides
# ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS = {
    "serve": ("wsbridge.cli", "serve a WSGI app with WebSocket, long-poll on gevent"),
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


# -- wsbridge serve ----------------------------------------------------------------------


def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    embedded_worker: bool = True,
    **options: Any,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (close WebSockets with 1001) or SIGHUP (1012), then
    return (:func:`wsbridge.transport.shutdown.shutdown`).

    Long-poll sessions are handed over to the other processes when the
    layer is shared (they survive the restart), else closed with 1001 too.
    Background channels run in this process too, unless ``embedded_worker``
    is False (``--no-worker``: separate ``wsbridge worker`` processes run them).
    The other options are :func:`wsbridge.transport.servers.pywsgi.serve`'s
    (``access_log``, ``shutdown_timeout``, ``ready``, ``timeouts``) and
    ``wrap()``'s.

    Requires gevent monkey-patching (``wsbridge serve`` does it for you).

    Raises:
        ConfigurationError: gevent has not patched the standard library.
    """
    from .transport.servers.pywsgi import serve as serve_pywsgi

    background = _embedded_worker if embedded_worker else None
    serve_pywsgi(app, host, port, background=background, **options)


def _embedded_worker(app: Any) -> Any:
    # Background channels run in-process by default (wsbridge.worker).
    from .worker import start_embedded

    return start_embedded(app.layer, app.router)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``wsbridge serve``."""
    parser.add_argument(
        "app", help="the WSGI app: module:attr, or module (uses `application`, then `app`)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default 8000, 0 = any)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--access-log", metavar="FILE", help="write access lines to FILE ('-' = stdout)"
    )
    parser.add_argument(
        "--routing",
        default=None,
        metavar="DOTTED",
        help="a routing module (router / routes list) or module:name, as for `wsbridge worker`",
    )
    parser.add_argument(
        "--consumers",
        action="append",
        default=[],
        metavar="MODULES",
        help="consumer modules to import first (their decorators register routes); "
        "comma-separated, repeatable",
    )
    parser.add_argument(
        "--layer",
        action="append",
        metavar="URL",
        help="the process's channel layer: 'memory', a redis:// URL (?prefix=...; "
        "repeat once per shard) or module:attr, as for `wsbridge worker`. Order of "
        "precedence: wrap(app, layer=...) in the app, then --layer, then $WSBRIDGE_LAYER, "
        "then the app's settings, then in-memory",
    )
    parser.add_argument(
        "--no-worker",
        dest="embedded_worker",
        action="store_false",
        help="do not run background channels in this process (`wsbridge worker` runs them)",
    )
    _add_limit_arguments(parser)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """``wsbridge serve``'s timeouts and garbage-collector switch."""
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds a client has to send a request line and headers (408 after; default 10)",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds an idle keep-alive connection is kept (default 30)",
    )
    gc_switch = parser.add_mutually_exclusive_group()
    gc_switch.add_argument(
        "--gc-tuning",
        dest="gc_tuning",
        action="store_true",
        default=None,
        help="gc.freeze() once the app is loaded and a generation-0 threshold of 50,000 "
        "(the default, unless WSBRIDGE_GC_TUNING=0)",
    )
    gc_switch.add_argument(
        "--no-gc-tuning",
        dest="gc_tuning",
        action="store_false",
        help="keep CPython's garbage collector settings (as WSBRIDGE_GC_TUNING=0 does)",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def run_serve(args: argparse.Namespace) -> int:
    """Run ``wsbridge serve``; returns the exit status."""
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        print(
            "wsbridge serve: gevent monkey-patching is missing; start it with the `wsbridge` "
            "command or `python -m wsbridge`, which patch before importing the app",
            file=sys.stderr,
        )
        return 2
    from .consumers.loading import build_router
    from .consumers.routing import router as default_router
    from .exceptions import WSBridgeError
    from .runtime import cwd_on_path, load_app, tune_gc
    from .transport.servers.pywsgi import wrap_if_needed

    try:
        cwd_on_path()  # --layer module:attr, --consumers and --routing name project modules too
        _install_command_layer(args.layer)  # before the app is imported: it may use it
        consumers = [m.strip() for v in args.consumers for m in v.split(",") if m.strip()]
        router = build_router(args.routing, consumers)
        app = load_app(args.app)
    except (WSBridgeError, ImportError) as exc:
        print(f"wsbridge serve: {exc}", file=sys.stderr)
        return 2
    if getattr(app, "wsbridge_wrapped", False):
        if getattr(app, "router", None) is default_router:
            app.router = router  # --routing / --consumers complete the default routes
    else:
        app = wrap_if_needed(app, router=router)
    tune_gc(getattr(args, "gc_tuning", None))  # the app is loaded: freeze it
    access_log = None
    if args.access_log == "-":
        access_log = sys.stdout
    elif args.access_log:
        access_log = open(args.access_log, "a", buffering=1)  # noqa: SIM115 - lives as long as the server
    from .transport.limits import ServerTimeouts

    timeouts = ServerTimeouts(
        header_timeout=getattr(args, "header_timeout", 10.0),
        keepalive_timeout=getattr(args, "keepalive_timeout", 30.0),
    )
    serve(
        app,
        args.host,
        args.port,
        access_log=access_log,
        ready=_print_ready,
        embedded_worker=args.embedded_worker,
        timeouts=timeouts,
    )
    return 0


def _install_command_layer(urls: list[str] | None) -> None:
    """``--layer`` (the ``serve`` source), else ``WSBRIDGE_LAYER`` (``env``), built now so
    a bad value stops the start; settings a Django site loads later do not replace it."""
    from .layers import install_channel_layer
    from .layers.urls import LAYER_ENV, layer_from_urls

    if urls:
        install_channel_layer(layer_from_urls(urls), "serve")
    elif os.environ.get(LAYER_ENV, "").strip():
        install_channel_layer(layer_from_urls(os.environ[LAYER_ENV], what=LAYER_ENV), "env")


def _print_ready(server: Any) -> None:
    # One parseable line on stdout: tests and scripts wait for it.
    print(f"wsbridge: listening on http://{server.server_host}:{server.server_port}/", flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
