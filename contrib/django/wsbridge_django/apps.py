"""The app config: on start-up, find the consumers and configure the channel layer."""

from __future__ import annotations

import importlib
import logging

from django.apps import AppConfig

__all__ = ["WsbridgeConfig", "load_consumers", "configure_layers"]

logger = logging.getLogger("wsbridge.django")


class WsbridgeConfig(AppConfig):
    """``wsbridge_django`` in ``INSTALLED_APPS``."""

    name = "wsbridge_django"
    label = "wsbridge_django"
    verbose_name = "wsbridge"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        configure_layers()
        load_consumers()
        from django.apps import apps

        if apps.is_installed("django.contrib.auth"):
            from .identity import connect_signals

            connect_signals()


def configure_layers() -> None:
    """Hand ``WSBRIDGE["LAYERS"]`` (or ``CHANNEL_LAYERS``) to wsbridge; neither set: untouched."""
    from wsbridge.layers import configure

    from .conf import layer_settings

    layers = layer_settings()
    if layers is not None:
        configure(layers)


def load_consumers() -> list[str]:
    """Import ``WSBRIDGE["CONSUMERS"]`` and each installed app's ``consumers`` module.

    Importing is what registers decorated consumers on ``wsbridge.router``.
    An app without ``consumers.py`` is skipped; an error inside one is
    raised, as Django's admin autodiscovery does. Returns the modules imported.
    """
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    from .conf import wsbridge_settings

    loaded = []
    for name in wsbridge_settings.CONSUMERS:
        importlib.import_module(name)
        loaded.append(name)
    if wsbridge_settings.AUTODISCOVER:
        for app_config in apps.get_app_configs():
            if module_has_submodule(app_config.module, "consumers"):
                name = f"{app_config.name}.consumers"
                importlib.import_module(name)
                loaded.append(name)
    logger.debug("consumer modules loaded: %s", ", ".join(loaded) or "none")
    return loaded
