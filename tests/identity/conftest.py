"""Two ``wsbridge serve`` processes of ``tests.identity.id_app`` on one Redis."""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Served, start_wsbridge_serve


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    prefix = "wsbridge-id-test-" + secrets.token_hex(4)
    layer = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    logs = tmp_path_factory.mktemp("identity")
    env = {**os.environ, "ID_TEST_LAYER": layer}
    a = start_wsbridge_serve("tests.identity.id_app:application", logs, "--layer", layer, env=env)
    b = start_wsbridge_serve(
        "tests.identity.id_app:application", logs, "--layer", layer, "--access-log", "-", env=env
    )
    yield a, b
    a.stop()
    b.stop()


def get(server: Served, path: str) -> Any:
    with urllib.request.urlopen(server.url(path), timeout=10) as response:
        return json.loads(response.read())


def wait_for(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("condition not met in time")
