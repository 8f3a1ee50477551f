"""The Redis layer against the real Redis on 127.0.0.1:6379: the conformance suite.

Every test uses its own random key prefix and deletes its keys afterwards;
the shared server is never flushed. Sharding, faults, integrity and
channels_redis interop have their own modules (test_redis_*.py).
"""

from __future__ import annotations

import pytest

from .conformance import LayerConformance
from .redis_helpers import make_layer_factory

pytestmark = pytest.mark.redis


class TestRedisLayerConformance(LayerConformance):
    @pytest.fixture
    def make_layer(self):
        with make_layer_factory() as make:
            yield make


class TestChannelsRedisCompatConformance(LayerConformance):
    """The same contract holds in channels_redis 4.x compatibility mode."""

    @pytest.fixture
    def make_layer(self):
        with make_layer_factory(compat="channels_redis") as make:
            yield make
