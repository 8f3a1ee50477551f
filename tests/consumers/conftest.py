"""Fixtures for the consumer tests: a fresh layer and a fresh router per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wsbridge.consumers.routing import Router
from wsbridge.layers.memory import MemoryLayer
from wsbridge.testing import use_channel_layer


@pytest.fixture
def layer() -> Iterator[MemoryLayer]:
    """A fresh in-memory layer installed as the default for the test."""
    with use_channel_layer() as installed:
        yield installed  # type: ignore[misc]


@pytest.fixture
def router() -> Router:
    """A private router, so tests never register on ``wsbridge.router``."""
    return Router()
