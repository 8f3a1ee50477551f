"""``manage.py wsbridge_status``: ``wsbridge status`` for the layer this site configures."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Show the channel layer: shards, groups, members, queues (wsbridge status)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        status = _status_module()
        if status is not None:
            adder = getattr(status, "add_status_arguments", None) or status.add_arguments
            adder(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        status = _status_module()
        if status is None:
            raise CommandError("wsbridge.status is not available in this wsbridge version")
        runner = getattr(status, "run_status", None) or status.run
        namespace = argparse.Namespace(**{k: v for k, v in options.items()})
        code = int(runner(namespace) or 0)
        if code:
            raise CommandError(f"wsbridge status exited with {code}")


def _status_module() -> Any:
    try:
        from wsbridge import status
    except ImportError:
        return None
    return status
