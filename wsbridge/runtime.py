"""Checks on the process wsbridge runs in.

Consumers are plain blocking Python code running in greenlets. That is only
safe when gevent has monkey-patched the standard library: otherwise one
``time.sleep``, socket read or lock in one consumer stalls every connection
of the process. Servers call :func:`require_monkey_patched` before they
start so that mistake is a clear message at start-up, not a mystery under load.
"""

from __future__ import annotations

from collections.abc import Iterable

from .exceptions import ConfigurationError

__all__ = ["require_monkey_patched", "unpatched_modules", "REQUIRED_PATCHES"]

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
