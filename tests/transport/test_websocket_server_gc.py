"""``wsbridge serve`` tunes the garbage collector once the app is loaded (tune_gc).

Each check runs in a fresh interpreter: the collector's settings are
process-wide and the test process must keep CPython's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from wsbridge.cli import add_serve_arguments
from wsbridge.transport.server import GC_THRESHOLDS

PROBE = """
import gc, json, sys
frozen_before = gc.get_freeze_count()  # not 0 on 3.12+, which counts objects made immortal
{setup}
from wsbridge.transport.server import tune_gc
enabled = {enabled}
tuned = tune_gc(enabled)
frozen = gc.get_freeze_count() > frozen_before
print(json.dumps([tuned, list(gc.get_threshold()), frozen, gc.isenabled()]))
"""

#: This interpreter's own thresholds (700, 10, 10 up to 3.12; 2000, 10, 10 on 3.13).
DEFAULT = json.loads(
    subprocess.run(
        [sys.executable, "-c", "import gc, json; print(json.dumps(list(gc.get_threshold())))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
)


def probe(enabled: str = "None", env: dict[str, str] | None = None, setup: str = "") -> list:
    return _last_json_line(PROBE.format(enabled=enabled, setup=setup), env)


def _last_json_line(code: str, env: dict[str, str] | None) -> list:
    """Run ``code`` in a fresh interpreter (WSBRIDGE_GC_TUNING only from ``env``)."""
    environ = {k: v for k, v in os.environ.items() if k != "WSBRIDGE_GC_TUNING"}
    environ.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_by_default_the_loaded_app_is_frozen_and_young_collections_are_rarer():
    assert probe() == [True, list(GC_THRESHOLDS), True, True]


def test_when_asked_it_tunes():
    assert probe("True") == [True, list(GC_THRESHOLDS), True, True]


@pytest.mark.parametrize("value", ["1", "on", "yes", ""])
def test_the_environment_variable_keeps_it_on(value):
    assert probe(env={"WSBRIDGE_GC_TUNING": value}) == [True, list(GC_THRESHOLDS), True, True]


@pytest.mark.parametrize("value", ["0", "off", "no", "False"])
def test_the_environment_variable_can_say_off(value):
    assert probe(env={"WSBRIDGE_GC_TUNING": value}) == [False, DEFAULT, False, True]


def test_false_turns_it_off():
    assert probe("False") == [False, DEFAULT, False, True]


def test_settings_the_app_made_itself_are_kept():
    assert probe("True", setup="gc.set_threshold(1000, 5, 5)") == [False, [1000, 5, 5], False, True]
    assert probe("True", setup="gc.disable()") == [False, DEFAULT, False, False]


def test_serve_has_a_switch_to_keep_the_defaults():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert parser.parse_args(["app"]).gc_tuning is None  # the environment (or the default)
    assert parser.parse_args(["app", "--no-gc-tuning"]).gc_tuning is False
    assert parser.parse_args(["app", "--gc-tuning"]).gc_tuning is True


GUNICORN_PROBE = """
import gc, json, sys, types
{setup}
from wsbridge.transport import servers
servers.first_request(None, {{}})
print(json.dumps(list(gc.get_threshold())))
"""


def _first_request(setup: str, env: dict[str, str] | None = None) -> list:
    return _last_json_line(GUNICORN_PROBE.format(setup=setup), env)


IN_GUNICORN = "sys.modules['gunicorn.arbiter'] = types.ModuleType('gunicorn.arbiter')"


def test_a_gunicorn_worker_tunes_the_collector_at_its_first_request():
    assert _first_request(IN_GUNICORN) == list(GC_THRESHOLDS)


def test_a_gunicorn_worker_keeps_cpythons_collector_when_told_to():
    assert _first_request(IN_GUNICORN, {"WSBRIDGE_GC_TUNING": "0"}) == DEFAULT


def test_another_server_leaves_the_collector_alone():
    assert _first_request("") == DEFAULT
