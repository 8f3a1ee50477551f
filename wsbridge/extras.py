"""What to install when an optional dependency is missing: one message, naming the extra.

The distribution is ``wsbridge-gevent`` (the import name stays ``wsbridge``);
its extras are ``redis`` (redis-py, cryptography), ``django`` and ``gunicorn``
(gunicorn with what its gevent worker needs)::

    pip install "wsbridge-gevent[redis,gunicorn]"
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "EXTRA_OF_MODULE", "install_hint", "missing_extra"]

DISTRIBUTION = "wsbridge-gevent"

#: Top-level module -> the extra that installs it.
EXTRA_OF_MODULE = {
    "redis": "redis",
    "cryptography": "redis",
    "django": "django",
    "gunicorn": "gunicorn",
}


def install_hint(extra: str) -> str:
    """``pip install "wsbridge-gevent[extra]"``: the line to tell the user."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def missing_extra(exc: ImportError) -> str | None:
    """The hint for an ImportError of a module an extra installs, else None."""
    name = (getattr(exc, "name", None) or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    return f"{name} is not installed; it comes with the {extra!r} extra: {install_hint(extra)}"
