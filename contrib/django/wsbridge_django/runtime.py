"""Process set-up shared by the management commands: gevent patching and the site's app."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["ensure_gevent", "serving_application"]

logger = logging.getLogger("wsbridge.django")


def ensure_gevent() -> None:
    """Make sure this process is monkey-patched; re-execute it patched if it is not.

    ``manage.py`` has imported Django (and created its per-thread database
    connection storage) before any command runs, which is too late to
    patch. So the command starts again through
    :mod:`wsbridge_django.launch`, which patches first; the process keeps
    its PID (``exec``), so Django's autoreloader and supervisors see no
    difference.

    Raises:
        django.core.management.CommandError: patching is still missing
            after the re-execution (gevent not importable in that Python?).
    """
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        return
    from django.core.management import CommandError

    from .launch import LAUNCHED_ENV

    if os.environ.get(LAUNCHED_ENV) == str(os.getpid()):
        raise CommandError(
            "gevent monkey-patching is missing even after relaunching; see wsbridge_django.launch"
        )
    script = sys.argv[0]
    if not os.path.exists(script):
        raise CommandError(
            "cannot relaunch this command patched by gevent: start it as "
            "`python -m wsbridge_django.launch manage.py ...`"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(
        sys.executable, [sys.executable, "-m", "wsbridge_django.launch", script, *sys.argv[1:]]
    )


def serving_application(*, static: bool = False) -> Any:
    """The site's ``WSGI_APPLICATION``, wrapped by wsbridge if its wsgi.py does not do it yet.

    With ``static`` (runserver under DEBUG) Django's static files handler is
    put around the site's own app, inside wsbridge.
    """
    from django.core.servers.basehttp import get_internal_wsgi_application

    from .wsgi import wrap_application

    app = get_internal_wsgi_application()
    if not getattr(app, "wsbridge_wrapped", False):
        app = wrap_application(app)
    if static:
        from django.contrib.staticfiles.handlers import StaticFilesHandler

        app.app = StaticFilesHandler(app.app)
    return app
