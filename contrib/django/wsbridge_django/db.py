"""Database connections around consumer calls, as Django manages them per request.

Django opens a connection on first use and closes it at the end of the
request when it is too old or broken (``CONN_MAX_AGE``). wsbridge has no
requests: it calls consumers, one message at a time, each in a greenlet.
:func:`consumer_call` does for every consumer call what Django does per
request, and more, because under gevent Django's connections are
*greenlet*-local (``threading.local`` is patched): a connection left open
at the end of a call would belong to a greenlet that is about to end, so
it is closed (or handed back to the pool with ``OPTIONS = {"pool": True}``
on PostgreSQL, which makes that cheap).

PostgreSQL under gevent needs a driver that waits through gevent:

* psycopg 3 does, when it is imported after ``gevent.monkey.patch_all()``
  (it then waits with ``select``, which gevent patches, instead of its C
  wait function). ``wsbridge serve``, ``gunicorn -k gevent`` and
  ``manage.py runserver`` patch first.
* psycopg2 needs ``psycogreen.gevent.patch_psycopg()`` called at start-up
  (:func:`patch_psycopg2` does it). Without it every query blocks the
  whole process; the system check ``wsbridge.E004`` says so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

__all__ = ["consumer_call", "close_old_connections", "release_connections", "patch_psycopg2"]

logger = logging.getLogger("wsbridge.django")

#: Scope key under which the test communicator shares the test's connections.
SHARED_CONNECTIONS_KEY = "wsbridge.test_connections"


def initialized_connections() -> list[Any]:
    """This greenlet's database connections that exist already (none are created).

    ``connections.all(initialized_only=True)`` on Django >= 4.1; on 3.2 the
    same test by hand (it is what 4.1 does), since ``all()`` would build a
    wrapper for every alias.
    """
    from django.db import connections

    try:
        return list(connections.all(initialized_only=True))
    except TypeError:  # Django < 4.1
        local = connections._connections
        return [connections[alias] for alias in connections if hasattr(local, alias)]


_initialized = initialized_connections


def close_old_connections() -> None:
    """Close connections that are broken or past ``CONN_MAX_AGE`` (Django's per-request rule).

    A connection inside a transaction (``atomic``) is left alone: it belongs
    to someone else's unit of work, a test case's for instance.
    """
    for conn in _initialized():
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def release_connections() -> None:
    """Close (or hand back to the pool) every connection this greenlet opened."""
    for conn in _initialized():
        if conn.in_atomic_block:
            continue
        try:
            conn.close()
        except Exception:  # a broken connection may fail to close; it is gone anyway
            logger.debug("closing database connection %s failed", conn.alias, exc_info=True)


@contextlib.contextmanager
def consumer_call(scope: dict[str, Any] | None = None) -> Iterator[None]:
    """Run one consumer call with Django's connection handling around it.

    Used by wsbridge_django's routing for every message a consumer handles
    and every background channel message. With ``WSBRIDGE["CLOSE_OLD_CONNECTIONS"]``
    off, nothing is done.
    """
    from .conf import wsbridge_settings

    shared = (scope or {}).get(SHARED_CONNECTIONS_KEY)
    if shared is not None:
        with _use_connections(shared):
            yield
        return
    if not wsbridge_settings.CLOSE_OLD_CONNECTIONS:
        yield
        return
    close_old_connections()
    try:
        yield
    finally:
        release_connections()


@contextlib.contextmanager
def _use_connections(shared: dict[str, Any]) -> Iterator[None]:
    # The test's connections (inside its transaction) are lent to the
    # consumer's greenlet, so the consumer sees the test's data; Django's
    # thread-sharing guard is told, as LiveServerTestCase does.
    from django.db import connections

    previous = {}
    for alias, conn in shared.items():
        mine = connections[alias]
        if mine is conn:
            continue
        previous[alias] = mine
        conn.inc_thread_sharing()
        connections[alias] = conn
    try:
        yield
    finally:
        for alias, mine in previous.items():
            connections[alias] = mine
            shared[alias].dec_thread_sharing()


def patch_psycopg2() -> bool:
    """Make psycopg2 wait through gevent (psycogreen); True if it was applied.

    Call it once, early (``wsgi.py`` before ``get_wsgi_application()``, or
    gunicorn's ``post_fork``). Does nothing when psycopg2 or psycogreen is
    not installed.
    """
    try:
        from psycogreen.gevent import patch_psycopg
    except ImportError:
        return False
    try:
        patch_psycopg()
    except ImportError:
        return False
    return True
