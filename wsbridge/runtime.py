"""The process wsbridge runs in: checks, the app it serves, its garbage collector.

Consumers are plain blocking Python code running in greenlets. That is only
safe when gevent has monkey-patched the standard library: otherwise one
``time.sleep``, socket read or lock in one consumer stalls every connection
of the process. Servers call :func:`require_monkey_patched` before they
start so that mistake is a clear message at start-up, not a mystery under load.

:func:`load_app` imports the app a command serves (``wsbridge serve
mysite.wsgi``) and :func:`tune_gc` sets the collector for a server once it
is loaded.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from .exceptions import ConfigurationError

__all__ = [
    "require_monkey_patched",
    "unpatched_modules",
    "REQUIRED_PATCHES",
    "load_app",
    "cwd_on_path",
    "tune_gc",
    "GC_THRESHOLDS",
]

logger = logging.getLogger("wsbridge.server")

#: What must be patched, as gevent names it, and why (for the error message).
REQUIRED_PATCHES: dict[str, str] = {
    "socket": "socket I/O (database drivers, Redis, HTTP clients) would block the process",
    "_thread": "locks and threading.local would block the process or be shared by greenlets",
    "time": "time.sleep() would block the process",
    "select": "select()/poll() would block the process",
}


def unpatched_modules(modules: Iterable[str] | None = None) -> list[str]:
    """The names in ``modules`` (default: :data:`REQUIRED_PATCHES`) gevent has not patched."""
    from gevent import monkey

    names = list(modules) if modules is not None else list(REQUIRED_PATCHES)
    # gevent records a patched thread module as "_thread" (older versions: "thread").
    return [
        name
        for name in names
        if not (
            monkey.is_module_patched(name)
            or (name in ("thread", "_thread") and monkey.is_module_patched("thread"))
        )
    ]


def require_monkey_patched(modules: Iterable[str] | None = None) -> None:
    """Raise ``ConfigurationError`` unless gevent has monkey-patched the standard library.

    Args:
        modules: gevent module names to require (default: socket, _thread,
            time, select).

    Raises:
        ConfigurationError: naming what is not patched and how to fix it. Run
            under ``wsbridge serve`` / ``wsbridge worker`` or ``gunicorn -k
            gevent`` (they patch first), or put ``from gevent import monkey;
            monkey.patch_all()`` at the very top of the entry point, before
            any other import.
    """
    missing = unpatched_modules(modules)
    if not missing:
        return
    reasons = "; ".join(f"{name}: {REQUIRED_PATCHES.get(name, 'not patched')}" for name in missing)
    raise ConfigurationError(
        f"gevent's monkey-patching is missing for {', '.join(missing)} ({reasons}). "
        "wsbridge runs blocking consumers in greenlets, which needs the standard library "
        "patched. Run the site with `wsbridge serve module:app` or `gunicorn -k gevent`, "
        "which patch before anything is imported, or make "
        "`from gevent import monkey; monkey.patch_all()` the first lines of your entry "
        "point (before Django, redis or any other import)."
    )


def cwd_on_path() -> None:
    """Put the cwd on ``sys.path``, as ``python -m`` does and console scripts do not.

    Call it before importing the project's modules (the app, ``--consumers``,
    ``--routing``), so that ``wsbridge serve`` finds them where it is started.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_app(spec: str) -> Any:
    """Import the WSGI app named by ``module:attr`` or ``module``.

    Without ``:attr`` the module's ``application`` is used, else its ``app``.

    Raises:
        ConfigurationError: the module or the attribute does not exist.
    """
    module_name, _, attr = spec.partition(":")
    cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for name in [attr] if attr else ["application", "app"]:
        app = getattr(module, name, None)
        if app is not None:
            if not callable(app):
                raise ConfigurationError(f"{module_name}:{name} is not a WSGI callable")
            return app
    wanted = attr or "application (or app)"
    raise ConfigurationError(f"{module_name} has no attribute {wanted}")


#: What ``wsbridge serve`` sets with :func:`tune_gc` (CPython's default: 700, 10, 10):
#: a young collection every 50,000 net allocations, the older ones at CPython's
#: own ratios of 20 (cycles that live long are still freed within minutes).
GC_THRESHOLDS = (50_000, 20, 20)
#: CPython's own defaults: (700, 10, 10) up to 3.12, (2000, 10, 10) from 3.13 on.
_CPYTHON_DEFAULT_THRESHOLDS = frozenset({(700, 10, 10), (2000, 10, 10)})


def tune_gc(enabled: bool | None = None) -> bool:
    """Collect cyclic garbage less often in a server; call it once the app is loaded.

    Every delivered message allocates a few container objects (the event
    dict, the frame), and with thousands of connections alive CPython's
    default of a young collection every 700 net allocations comes every few
    hundred deliveries. This freezes what is loaded so far (the app, Django,
    the modules: ``gc.freeze()``, after one last full collection, so no
    garbage is frozen) and sets :data:`GC_THRESHOLDS`. Cycles made later
    are still collected, in fewer, bigger passes.

    It is on by default in the servers wsbridge runs (``wsbridge serve``, the
    gunicorn hook): with thousands of connections open, the collector's
    passes over them were about a quarter of what a WebSocket join cost
    (docs/topics/performance.rst, "The garbage collector").

    Args:
        enabled: True to tune, False to leave the collector alone; None reads
            ``WSBRIDGE_GC_TUNING`` (``0``, ``no``, ``off`` or ``false`` leave
            it alone; unset or anything else tunes).

    Returns:
        True if it tuned; False when disabled, or when the app already set
        its own thresholds or disabled the collector (its choice is kept).
    """
    if enabled is None:
        enabled = os.environ.get("WSBRIDGE_GC_TUNING", "1").strip().lower() not in (
            "0",
            "no",
            "off",
            "false",
        )
    if not enabled:
        return False
    if not gc.isenabled() or gc.get_threshold() not in _CPYTHON_DEFAULT_THRESHOLDS:
        logger.debug("garbage collector already configured by the app: left as is")
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return True
