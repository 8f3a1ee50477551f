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
def default_router() -> Iterator[Router]:
    """``wsbridge.router``, put back as it was after the test (other modules register on it)."""
    from wsbridge.consumers.routing import router as default

    saved = (list(default._routes), dict(default._channels), dict(default._function_routes))
    try:
        yield default
    finally:
        default._routes[:], default._channels, default._function_routes = (
            saved[0],
            saved[1],
            saved[2],
        )


@pytest.fixture
def router() -> Router:
    """A private router, so tests never register on ``wsbridge.router``."""
    return Router()
