"""Servers shared by the WebSocket transport tests (one process each per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Served, start_wsbridge_serve


@pytest.fixture(scope="session")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``wsbridge serve tests.transport.ws_apps:application``: the library defaults."""
    served = start_wsbridge_serve(
        "tests.transport.ws_apps:application", tmp_path_factory.mktemp("ws")
    )
    yield served
    served.stop()


@pytest.fixture(scope="session")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The same routes with short timers and small limits (``ws_apps.tight``)."""
    served = start_wsbridge_serve("tests.transport.ws_apps:tight", tmp_path_factory.mktemp("tight"))
    yield served
    served.stop()
