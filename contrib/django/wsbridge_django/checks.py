"""System checks: what would make realtime fail or block, said before it does.

They run with ``manage.py check`` (tag ``wsbridge``; the layer probe with
``--deploy``) and, all of them, when the site starts serving
(:func:`run_startup_checks`, called by ``get_wsgi_application()``,
``runserver`` and ``runworker``), where an error stops the start with its
message instead of a server that hangs later.

=================  =============================================================
wsbridge.E001      gevent's monkey-patching is missing in a serving process
wsbridge.E002      the channel layer cannot be reached
wsbridge.E003      psycopg (3) was imported before monkey-patching: it would block
wsbridge.E004      psycopg2 without psycogreen: every query would block the process
wsbridge.W005      mysqlclient (MySQLdb) blocks under gevent; PyMySQL does not
wsbridge.E006      several processes serve but the layer is the in-memory one
wsbridge.W007      unknown key in ``WSBRIDGE`` (a typo?)
wsbridge.W008      ``ALLOWED_ORIGINS`` allows every site (cross-site WebSocket hijacking)
wsbridge.W009      staticfiles is listed before wsbridge_django: its runserver would win
=================  =============================================================
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.checks import Error, Warning, register

__all__ = ["run_startup_checks", "set_serving", "is_serving"]

TAG = "wsbridge"
_serving = False


def set_serving(value: bool = True) -> None:
    """Mark this process as one that serves (or works): the strict checks apply."""
    global _serving
    _serving = value


def is_serving() -> bool:
    """True once a server (``wsbridge serve``, ``runserver``, gunicorn) serves this process."""
    return _serving


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


@register(TAG)
def check_gevent(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from .conf import wsbridge_settings

    if not _serving or not wsbridge_settings.REQUIRE_GEVENT or _gevent_patched():
        return []
    return [
        Error(
            "gevent's monkey-patching is missing: WebSocket and long-poll connections would "
            "block the whole process.",
            hint="Serve with `wsbridge serve mysite.wsgi` or `gunicorn -k gevent mysite.wsgi`, "
            "or call gevent.monkey.patch_all() before anything else is imported.",
            id="wsbridge.E001",
        )
    ]


@register(TAG, deploy=True)
def check_layer_reachable(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from wsbridge.layers import get_channel_layer

    try:
        layer = get_channel_layer()
        if type(layer).__name__ == "MemoryLayer":
            return []
        ping = getattr(layer, "ping", None)
        if callable(ping):
            ping()
        else:
            layer.group_channels("wsbridge.check")  # a read: reaches every backend
    except Exception as exc:
        return [
            Error(
                f"the channel layer cannot be reached: {type(exc).__name__}: {exc}",
                hint="Start Redis, or fix WSBRIDGE['LAYERS'] / CHANNEL_LAYERS "
                "(BACKEND and CONFIG hosts).",
                id="wsbridge.E002",
            )
        ]
    return []


@register(TAG)
def check_database_drivers(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.conf import settings

    errors: list[Any] = []
    engines = {db.get("ENGINE", "") for db in settings.DATABASES.values()}
    if any("postgresql" in engine for engine in engines):
        errors += _check_postgresql()
    if any(engine.endswith("mysql") for engine in engines):
        errors += _check_mysql()
    return errors


def _postgresql_driver() -> str | None:
    """ "psycopg" or "psycopg2": the driver Django's backend uses; None without one."""
    try:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3
    except ImportError:
        try:  # Django < 4.2 has no psycopg_any: it speaks psycopg2 only
            import psycopg2  # noqa: F401
        except ImportError:  # no driver at all: Django reports that itself
            return None
        return "psycopg2"
    except Exception:  # a broken driver: Django reports that itself
        return None
    return "psycopg" if is_psycopg3 else "psycopg2"


def _check_postgresql() -> list[Any]:
    driver = _postgresql_driver()
    if driver is None:
        return []
    if driver == "psycopg":
        waiting = sys.modules.get("psycopg.waiting")
        if (
            _gevent_patched()
            and waiting is not None
            and getattr(waiting, "wait_c", None) is waiting.wait
        ):
            return [
                Error(
                    "psycopg was imported before gevent's monkey-patching: its queries would "
                    "block the whole process.",
                    hint="Patch first: serve with `wsbridge serve` or `gunicorn -k gevent`, and "
                    "import nothing that imports psycopg before patching.",
                    id="wsbridge.E003",
                )
            ]
        return []
    import psycopg2.extensions

    if psycopg2.extensions.get_wait_callback() is not None:
        return []
    make = Error if _serving else Warning
    return [
        make(
            "psycopg2 without psycogreen: every PostgreSQL query blocks the whole process "
            "under gevent.",
            hint="pip install psycogreen and call wsbridge_django.db.patch_psycopg2() first in "
            "wsgi.py, or install psycopg 3 (`pip install 'psycopg[binary]'`), which Django "
            "prefers.",
            id="wsbridge.E004",
        )
    ]


def _check_mysql() -> list[Any]:
    mysqldb = sys.modules.get("MySQLdb")
    if mysqldb is None or "pymysql" in getattr(mysqldb, "__name__", "") + repr(mysqldb):
        return []
    return [
        Warning(
            "mysqlclient (MySQLdb) is a C driver: its queries block the whole process under "
            "gevent.",
            hint="pip install PyMySQL and call pymysql.install_as_MySQLdb() in settings.py.",
            id="wsbridge.W005",
        )
    ]


def _layer_chosen_outside_settings() -> bool:
    # wrap(layer=), `wsbridge serve --layer` or WSBRIDGE_LAYER win over the settings.
    import os

    from wsbridge.layers import channel_layer_source
    from wsbridge.layers.urls import LAYER_ENV

    # (The checks run before wrap(): an explicit layer is not chosen yet.)
    return bool(os.environ.get(LAYER_ENV, "").strip()) or channel_layer_source() in ("serve", "env")


@register(TAG)
def check_layer_for_processes(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from wsbridge.layers import backend_class_path

    from .conf import expected_processes, layer_settings

    processes = expected_processes()
    if processes <= 1:
        return []
    if _layer_chosen_outside_settings():
        from wsbridge.layers import get_channel_layer

        if "shared" in get_channel_layer().extensions:
            return []
    else:
        spec = (layer_settings() or {}).get("default") or {"BACKEND": "memory"}
        backend = backend_class_path(spec.get("BACKEND", "memory"))
        if not backend.endswith("MemoryLayer"):
            return []
    return [
        Error(
            f"{processes} processes will serve this site but the channel layer is the in-memory "
            "one: groups, long-poll sessions and background channels would not reach across them.",
            hint="Configure the Redis layer: WSBRIDGE = {'LAYERS': {'default': "
            "{'BACKEND': 'redis', "
            "'CONFIG': {'hosts': ['redis://127.0.0.1:6379']}}}}.",
            id="wsbridge.E006",
        )
    ]


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from .conf import wsbridge_settings

    messages: list[Any] = [
        Warning(
            f"WSBRIDGE[{key!r}] is not a wsbridge setting; it is ignored.",
            hint="See docs/topics/django.rst for the settings.",
            id="wsbridge.W007",
        )
        for key in wsbridge_settings.unknown_keys()
    ]
    if "*" in (wsbridge_settings.ALLOWED_ORIGINS or ()):
        messages.append(
            Warning(
                "WSBRIDGE['ALLOWED_ORIGINS'] contains '*': any web site can open sockets to this "
                "one with its visitors' cookies (cross-site WebSocket hijacking).",
                hint="List the origins of your own pages, or leave it unset to use ALLOWED_HOSTS.",
                id="wsbridge.W008",
            )
        )
    return messages


@register(TAG)
def check_app_order(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.conf import settings

    names = [name.split(".apps.")[0] for name in settings.INSTALLED_APPS]
    if "django.contrib.staticfiles" not in names or "wsbridge_django" not in names:
        return []
    if names.index("django.contrib.staticfiles") > names.index("wsbridge_django"):
        return []
    return [
        Warning(
            "django.contrib.staticfiles comes before wsbridge_django in INSTALLED_APPS: "
            "`manage.py runserver` would be Django's, without WebSocket or long-poll.",
            hint="Move 'wsbridge_django' above 'django.contrib.staticfiles'.",
            id="wsbridge.W009",
        )
    ]


def run_startup_checks() -> None:
    """Run every wsbridge check as a serving process; raise on errors.

    Raises:
        django.core.exceptions.ImproperlyConfigured: with each error's
            message and hint, one per line.
    """
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    set_serving(True)
    found = checks.run_checks(tags=[TAG], include_deployment_checks=True, databases=None)
    errors = [m for m in found if m.is_serious()]
    for message in found:
        if not message.is_serious():
            import logging

            logging.getLogger("wsbridge.django").warning("%s", message)
    if errors:
        raise ImproperlyConfigured(
            "wsbridge cannot serve this site:\n" + "\n".join(f"  {m}" for m in errors)
        )
