"""``manage.py runserver``: Django's development server, with WebSocket and long-poll.

Replaces Django's ``runserver`` when ``wsbridge_django`` is listed in
``INSTALLED_APPS`` before ``django.contrib.staticfiles``. Same options,
same autoreload on code changes, static files under ``DEBUG``; the server
underneath is wsbridge's gevent server (:func:`wsbridge.cli.serve`),
so the consumers answer on the same port as the pages.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from django.apps import apps
from django.conf import settings
from django.utils import autoreload

from ...db import initialized_connections

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as BaseRunserver
else:  # pragma: no cover - a site without staticfiles
    from django.core.management.commands.runserver import Command as BaseRunserver


class Command(BaseRunserver):
    help = "Start the development server with WebSocket and long-poll (wsbridge), with autoreload."

    def handle(self, *args: Any, **options: Any) -> None:
        from ...runtime import ensure_gevent

        # Relaunched patched when needed (the reloader's parent too: harmless,
        # and its children then start patched as well).
        ensure_gevent()
        super().handle(*args, **options)

    def inner_run(self, *args: Any, **options: Any) -> None:
        from wsbridge.cli import serve

        from ...checks import run_startup_checks
        from ...runtime import serving_application

        autoreload.raise_last_exception()
        if not options.get("skip_checks"):  # Django < 4.0 has no --skip-checks
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for conn in initialized_connections():
            conn.close()
        try:
            run_startup_checks()
            static = bool(options.get("use_static_handler", False)) and (
                settings.DEBUG or options.get("insecure_serving", False)
            )
            app = serving_application(
                static=static and apps.is_installed("django.contrib.staticfiles")
            )
            host = self.addr if not self._raw_ipv6 else self.addr.strip("[]")
            serve(app, host, int(self.port), ready=lambda server: self._ready(server.server_port))
        except OSError as exc:
            messages: dict[int | None, str] = {
                errno.EACCES: "You don't have permission to access that port.",
                errno.EADDRINUSE: "That port is already in use.",
                errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
            }
            self.stderr.write(f"Error: {messages.get(exc.errno, exc)}")
            os._exit(1)  # sys.exit does not end the process from the server's greenlet
        except KeyboardInterrupt:
            sys.exit(0)
        # serve() returns after SIGTERM/SIGINT closed the sockets: end the
        # process, reloader loop included.
        os._exit(0)

    def _ready(self, port: int) -> None:
        """Say where the server listens (with the bound port, for ``0``)."""
        on_bind = getattr(super(), "on_bind", None)
        if on_bind is not None:
            on_bind(port)
            return
        # Django < 4.0 has no on_bind(): the same line it prints from 4.0 on.
        addr = f"[{self.addr}]" if self._raw_ipv6 else self.addr
        self.stdout.write(
            f"Starting development server at {self.protocol}://{addr}:{port}/\n"
            f"Quit the server with {'CTRL-BREAK' if sys.platform == 'win32' else 'CONTROL-C'}."
        )
