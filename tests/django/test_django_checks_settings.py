"""WSBRIDGE settings (lazy, with defaults) and the system checks, each with its message."""

from __future__ import annotations

import subprocess
import sys

import django
from django.core import checks
from django.test import SimpleTestCase, override_settings
from djtest_server import base_env
from wsbridge_django import checks as wschecks
from wsbridge_django.conf import (
    allowed_origins,
    expected_processes,
    layer_settings,
    wsbridge_settings,
)


def wsbridge_messages(**kwargs):
    return checks.run_checks(tags=["wsbridge"], **kwargs)


def ids(messages):
    return sorted(m.id for m in messages)


class SettingsTests(SimpleTestCase):
    def test_defaults_apply_and_settings_are_read_when_asked(self):
        assert wsbridge_settings.AUTODISCOVER is True
        with override_settings(WSBRIDGE={"AUTODISCOVER": False}):
            assert wsbridge_settings.AUTODISCOVER is False

    @override_settings(
        WSBRIDGE={},
        CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}},
    )
    def test_channels_layer_setting_is_used_when_wsbridge_names_none(self):
        assert layer_settings() == {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}

    @override_settings(WSBRIDGE={}, ALLOWED_HOSTS=["example.com"], DEBUG=False)
    def test_allowed_origins_default_to_allowed_hosts(self):
        assert allowed_origins() == ["example.com"]

    @override_settings(WSBRIDGE={}, ALLOWED_HOSTS=[], DEBUG=True)
    def test_debug_with_no_allowed_hosts_allows_loopback_like_django(self):
        assert "127.0.0.1" in allowed_origins()

    def test_processes_come_from_the_setting_web_concurrency_or_gunicorn_args(self):
        with override_settings(WSBRIDGE={"PROCESSES": 3}):
            assert expected_processes() == 3
        with override_settings(WSBRIDGE={}):
            env = {"WEB_CONCURRENCY": "", "GUNICORN_CMD_ARGS": "-k gevent --workers=4"}
            with self.modify_env(env):
                assert expected_processes() == 4

    def modify_env(self, values):
        from unittest import mock

        return mock.patch.dict("os.environ", values)


class CheckTests(SimpleTestCase):
    def tearDown(self):
        wschecks.set_serving(False)

    def test_the_test_project_passes(self):
        assert [m for m in wsbridge_messages() if m.is_serious()] == []

    @override_settings(WSBRIDGE={"PROCESSES": 2})
    def test_memory_layer_with_several_processes_is_an_error_naming_the_fix(self):
        errors = [m for m in wsbridge_messages() if m.id == "wsbridge.E006"]
        assert errors and "Redis" in errors[0].hint

    @override_settings(WSBRIDGE={"PROCESSES": 2, "LAYERS": {"default": {"BACKEND": "redis"}}})
    def test_redis_layer_with_several_processes_passes(self):
        assert "wsbridge.E006" not in ids(wsbridge_messages())

    @override_settings(WSBRIDGE={"ALOWED_ORIGINS": ["x"], "ALLOWED_ORIGINS": ["*"]})
    def test_typos_and_a_wildcard_origin_are_warned_about(self):
        found = ids(wsbridge_messages())
        assert "wsbridge.W007" in found and "wsbridge.W008" in found

    @override_settings(INSTALLED_APPS=["django.contrib.staticfiles", "wsbridge_django"])
    def test_staticfiles_before_wsbridge_is_warned_about(self):
        assert wschecks.check_app_order() and wschecks.check_app_order()[0].id == "wsbridge.W009"

    def test_unpatched_serving_process_is_an_error(self):
        # This pytest process is not monkey-patched unless a conftest did it.
        from gevent import monkey

        wschecks.set_serving(True)
        found = ids(wsbridge_messages())
        assert ("wsbridge.E001" in found) == (not monkey.is_module_patched("socket"))

    def test_unreachable_layer_is_an_error_with_the_reason(self):
        from djtest_server import free_port

        from wsbridge.layers import get_channel_layer, set_channel_layer
        from wsbridge.layers.redis import RedisLayer

        previous = get_channel_layer()
        layer = RedisLayer(hosts=[f"redis://127.0.0.1:{free_port()}/0"], retry_backoff=(0.05, 0.1))
        set_channel_layer(layer)
        try:
            errors = wschecks.check_layer_reachable()
        finally:
            set_channel_layer(previous)
            layer.close()
        assert [e.id for e in errors] == ["wsbridge.E002"]
        assert "cannot be reached" in errors[0].msg


def _check_in_subprocess(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(WSBRIDGE_TEST_DB="postgres:postgres", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


PRELUDE = """
import django
django.setup()
import django
from django.core import checks
from wsbridge_django.checks import set_serving
set_serving(True)
print(sorted(m.id for m in checks.run_checks(tags=["wsbridge"])))
"""


def test_psycopg_imported_before_patching_is_reported():
    out = _check_in_subprocess(
        "import psycopg\nfrom gevent import monkey\nmonkey.patch_all()\n" + PRELUDE
    )
    if django.VERSION < (4, 2):
        # Django 3.2 speaks psycopg2 only: psycopg 3 imported early is harmless there,
        # and the unpatched psycopg2 is what must be reported.
        assert "wsbridge.E003" not in out and "wsbridge.E004" in out
    else:
        assert "wsbridge.E003" in out


def test_psycopg_imported_after_patching_passes():
    out = _check_in_subprocess(
        "from gevent import monkey\nmonkey.patch_all()\nimport psycopg\n" + PRELUDE
    )
    assert "wsbridge.E003" not in out and "wsbridge.E001" not in out


def test_psycopg2_without_psycogreen_is_reported_and_patch_psycopg2_fixes_it():
    # psycopg (3) made unimportable, so Django's backend falls back to psycopg2.
    hide = (
        "import sys\nsys.modules['psycopg'] = None\nfrom gevent import monkey\nmonkey.patch_all()\n"
    )
    assert "wsbridge.E004" in _check_in_subprocess(hide + PRELUDE)
    fixed = (
        hide + "from wsbridge_django.db import patch_psycopg2\nassert patch_psycopg2()\n" + PRELUDE
    )
    assert "wsbridge.E004" not in _check_in_subprocess(fixed)


def test_get_wsgi_application_refuses_to_start_unpatched_with_the_message():
    done = subprocess.run(
        [sys.executable, "-c", "import djtest.wsgi"],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "wsbridge.E001" in done.stderr and "gunicorn -k gevent" in done.stderr
