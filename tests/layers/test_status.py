"""``wsbridge status`` and ``wsbridge check`` as real subprocesses against real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .redis_helpers import SHARED_REDIS, make_layer_factory
from .redis_server import free_port

pytestmark = pytest.mark.redis


def wsbridge(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_status_shows_shards_groups_members_and_queue_depths():
    with make_layer_factory() as make:
        layer = make()
        for i in range(3):
            layer.group_add("status.room", f"member.{i}")
        layer.group_add("status.other", "member.0")
        layer.send("status.jobs", {"type": "x"})
        layer.send("status.jobs", {"type": "x"})
        layer.send("status.jobs", {"type": "later"}, delay=60)
        result = wsbridge("status", "--layer", f"{SHARED_REDIS}?prefix={make.prefix}")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "shard 0 redis://127.0.0.1:6379/0: reachable" in out
        assert "groups: 2 (4 members)" in out
        assert "status.room" in out and "3 members" in out
        assert "status.jobs" in out and "2 waiting" in out
        assert "delayed: 1" in out

        as_json = wsbridge("status", "--json", "--layer", f"{SHARED_REDIS}?prefix={make.prefix}")
        shard = json.loads(as_json.stdout)["shards"][0]
        assert shard["groups"] == {"status.room": 3, "status.other": 1}


def test_status_from_a_settings_module_with_two_shards_one_down(tmp_path):
    dead = free_port()
    (tmp_path / "sitesettings.py").write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'channels_redis.core.RedisChannelLayer',\n"
        f"    'CONFIG': {{'hosts': ['{SHARED_REDIS}', ('127.0.0.1', {dead})],\n"
        "    'prefix': 'stt'}}}\n"
    )
    result = wsbridge("status", "--layer-settings", "sitesettings", cwd=tmp_path)
    assert result.returncode == 1
    assert "shard 0 redis://127.0.0.1:6379/0: reachable" in result.stdout
    assert f"shard 1 redis://127.0.0.1:{dead}/0: UNREACHABLE" in result.stdout


def test_check_passes_with_a_reachable_layer_and_fails_clearly_without():
    ok = wsbridge("check", "--layer", f"{SHARED_REDIS}?prefix=wsbcheck")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   monkey-patching" in ok.stdout and "ok   layer round trip" in ok.stdout
    bad = wsbridge("check", "--layer", f"redis://127.0.0.1:{free_port()}/0")
    assert bad.returncode == 1
    assert "FAIL shard" in bad.stdout and "unreachable" in bad.stdout


def test_status_with_a_bad_layer_option_exits_2():
    result = wsbridge("status", "--layer-settings", "no_such_settings_module")
    assert result.returncode == 2
    assert "no_such_settings_module" in result.stderr
