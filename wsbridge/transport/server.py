"""Former home of ``wsbridge serve``'s server; its names, where they live now.

Kept so that imports in existing code and scripts go on working:

* :func:`serve` -> :func:`wsbridge.cli.serve` (the server and the embedded worker);
* ``make_server``, ``handler_class``, ``WSBridgeHandler`` ->
  :mod:`wsbridge.transport.servers.pywsgi`;
* ``load_app``, ``cwd_on_path``, ``tune_gc``, ``GC_THRESHOLDS`` ->
  :mod:`wsbridge.runtime`.

The command's options (``add_serve_arguments``, ``run_serve``) are in
``wsbridge.cli``.
"""

from __future__ import annotations

from typing import Any

from ..runtime import GC_THRESHOLDS, cwd_on_path, load_app, tune_gc
from .servers.pywsgi import handler_class, make_server

__all__ = [
    "serve",
    "make_server",
    "load_app",
    "handler_class",
    "cwd_on_path",
    "tune_gc",
    "GC_THRESHOLDS",
]


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """:func:`wsbridge.cli.serve`: serve ``app`` (and, by default, its background channels)."""
    from .. import cli

    cli.serve(app, host, port, **options)


def __getattr__(name: str) -> Any:
    if name == "WSBridgeHandler":  # built on first use
        return handler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
