"""The Django test project (tests/django/djtest): in-process set-up and a real-server fixture.

No ``__init__.py`` here on purpose: a package named ``django`` under tests/
would shadow Django itself. pytest puts this directory on ``sys.path``, so
the project is importable as ``djtest``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Patch before Django sets up: other conftests (tests/layers) patch the
# process too, and Django's per-thread connection storage must be created
# after patching, or greenlets would share (and trip over) one connection.
from gevent import monkey  # noqa: E402

if not monkey.is_module_patched("socket"):
    assert "django.db" not in sys.modules, "django.db was imported before gevent patched"
    monkey.patch_all()

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djtest.settings")

import django  # noqa: E402

django.setup()

from djtest_server import DjangoServer, free_port, postgres_database  # noqa: E402

__all__ = ["DjangoServer", "free_port", "postgres_database"]


@pytest.fixture
def memory_layer():
    """A fresh in-memory layer installed as the default for one test."""
    from wsbridge.layers import get_channel_layer, set_channel_layer
    from wsbridge.layers.memory import MemoryLayer

    previous = get_channel_layer()
    layer = MemoryLayer()
    set_channel_layer(layer)
    yield layer
    layer.close()
    set_channel_layer(previous)
