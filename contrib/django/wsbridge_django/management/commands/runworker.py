"""``manage.py runworker``: run background channel consumers (Channels-compatible options).

::

    manage.py runworker                       # every @router.channel of the site
    manage.py runworker thumbnails emails     # only these channels (Channels 2+ style)
    manage.py runworker --only-channels 'thumb*' --exclude-channels 'thumb.slow'
    manage.py runworker --layer default       # a WSBRIDGE/CHANNEL_LAYERS alias, or a redis:// URL

Delegates to :class:`wsbridge.worker.Worker`; SIGTERM finishes the messages
in hand, then exits.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run background channel consumers (wsbridge worker) for this site."
    requires_system_checks: list[str] = []  # wsbridge's run after gevent is patched

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("channels", nargs="*", help="channel names to run (default: all)")
        parser.add_argument(
            "--layer",
            default="default",
            help="a WSBRIDGE['LAYERS'] / CHANNEL_LAYERS alias, 'memory', or a redis:// URL",
        )
        parser.add_argument(
            "--only-channels",
            action="append",
            default=[],
            metavar="GLOBS",
            help="run only channels matching these globs (comma-separated)",
        )
        parser.add_argument(
            "--exclude-channels",
            action="append",
            default=[],
            metavar="GLOBS",
            help="skip channels matching these globs (comma-separated)",
        )
        parser.add_argument(
            "--concurrency",
            "--threads",
            type=int,
            default=None,
            dest="concurrency",
            help="consumers running at once (--threads is the Channels 1.x name)",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=30.0,
            help="seconds to finish messages in hand on SIGTERM",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...runtime import ensure_gevent

        ensure_gevent()
        import signal

        import gevent

        from wsbridge import worker as wsworker

        from ...checks import run_startup_checks
        from ...routing import get_router

        run_startup_checks()
        layer = self._layer(options["layer"])
        kwargs: dict[str, Any] = {
            "only_channels": list(options["channels"]) + _split(options["only_channels"]),
            "exclude_channels": _split(options["exclude_channels"]),
        }
        if options["concurrency"]:
            kwargs["concurrency"] = options["concurrency"]
        worker = wsworker.Worker(layer, get_router(), **kwargs)
        if not worker.channels:
            raise CommandError(
                "no background channel to run: define @router.channel consumers in an app's "
                "consumers.py, and check the channel names and globs given"
            )

        def stop() -> None:
            gevent.spawn(worker.stop, options["shutdown_timeout"])

        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, stop)
        self.stdout.write(
            f"runworker: channels {', '.join(worker.channels)} on {type(layer).__name__}"
        )
        self.stdout.flush()
        worker.run()

    @staticmethod
    def _layer(value: str) -> Any:
        from wsbridge.exceptions import ConfigurationError
        from wsbridge.layers import get_channel_layer
        from wsbridge.worker import layer_from_option

        from ...conf import layer_settings

        try:
            if value in (layer_settings() or {"default": None}):
                return get_channel_layer(value)
            return layer_from_option(value)
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
