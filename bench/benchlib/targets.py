"""The targets: how to start each server, where its sockets are, how to publish to it.

Every server runs pinned to core 0 (``SERVER_CORE``); a target with two
worker processes (wsbridge-redis under gunicorn) has both on that core.
The load client, Redis and the publishers share core 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import BENCH_DIR
from .procs import CLIENT_CORE, LOOPBACK, SERVER_CORE, Proc, wait_port
from .venvs import ensure_venv, venv_bin, venv_python

SERVERS = BENCH_DIR / "servers"
PUBLISHERS = BENCH_DIR / "publishers"
GROUP = "bench"

# packages whose versions the report names, per venv
VERSION_PACKAGES = {
    "wsbridge": [
        "wsbridge",
        "gevent",
        "greenlet",
        "websockets",
        "redis",
        "msgpack",
        "gunicorn",
        "pyuwsgi",
    ],
    "channels": ["channels", "daphne", "channels-redis", "django", "twisted", "redis"],
    "socketio": ["python-socketio", "python-engineio", "gevent", "gevent-websocket", "redis"],
    "raw": ["gevent", "gevent-websocket", "redis"],
}


@dataclass
class Target:
    name: str
    venv: str
    proto: str  # "ws" (plain WebSocket) or "sio" (Socket.IO over WebSocket)
    description: str
    processes: int = 1
    notes: list[str] = field(default_factory=list)
    #: set by ``run.py --server-env KEY=VALUE`` (experiments, e.g. gevent settings)
    extra_env: dict[str, str] = field(default_factory=dict)

    # -- URLs ---------------------------------------------------------------
    def chat_url(self, port: int) -> str:
        if self.proto == "sio":
            return f"ws://{LOOPBACK}:{port}/socket.io/?EIO=4&transport=websocket&room={GROUP}"
        return f"ws://{LOOPBACK}:{port}/ws/chat/{GROUP}/"

    def echo_url(self, port: int) -> str:
        if self.proto == "sio":
            return f"ws://{LOOPBACK}:{port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://{LOOPBACK}:{port}/ws/echo/"

    # -- processes ------------------------------------------------------------
    def server_cmd(self, port: int, redis_url: str) -> tuple[list[str], dict[str, str], Path]:
        raise NotImplementedError

    def publisher_cmd(self, port: int, redis_url: str) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        ensure_venv(self.venv)

    def start(self, port: int, redis_url: str, log_dir: Path, tag: str) -> Proc:
        cmd, env, cwd = self.server_cmd(port, redis_url)
        env = {**env, **self.extra_env}
        proc = Proc(f"{tag}-server", cmd, log_dir=log_dir, env=env, cwd=cwd, core=SERVER_CORE)
        wait_port(port, 60, proc.popen)
        return proc

    def publisher(
        self, port: int, redis_url: str, log_dir: Path, tag: str, count: int, interval: float
    ) -> Proc:
        cmd = [
            *self.publisher_cmd(port, redis_url),
            "--count",
            str(count),
            "--interval",
            str(interval),
            "--group",
            GROUP,
        ]
        return Proc(
            f"{tag}-publisher",
            cmd,
            log_dir=log_dir,
            cwd=PUBLISHERS,
            core=CLIENT_CORE,
            stdout_lines=True,
        )


#: ``run.py --wsbridge-src DIR``: import wsbridge from DIR (a patched copy) instead of the checkout.
WSBRIDGE_SRC: list[str] = []


def wsbridge_pythonpath() -> str:
    return ":".join([*WSBRIDGE_SRC, str(SERVERS)])


class WsbridgeMemory(Target):
    def server_cmd(self, port, redis_url):
        cmd = [
            str(venv_bin("wsbridge", "wsbridge")),
            "serve",
            "wsbridge_app:application",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        env = {"BENCH_LAYER": "memory", "PYTHONPATH": wsbridge_pythonpath()}
        return cmd, env, SERVERS

    def publisher_cmd(self, port, redis_url):
        return [
            str(venv_python("wsbridge")),
            "pub_wsbridge.py",
            "--url",
            f"http://{LOOPBACK}:{port}/bench/publish",
        ]


class WsbridgeMetrics(WsbridgeMemory):
    """``wsbridge``, with Prometheus metrics on (``wrap(metrics_path=...)``): on vs off."""

    def server_cmd(self, port, redis_url):
        cmd, env, cwd = super().server_cmd(port, redis_url)
        env["BENCH_METRICS"] = "1"
        return cmd, env, cwd


class WsbridgeGcDefaults(WsbridgeMemory):
    """``wsbridge`` with CPython's collector settings (``WSBRIDGE_GC_TUNING=0``): on vs off."""

    def server_cmd(self, port, redis_url):
        cmd, env, cwd = super().server_cmd(port, redis_url)
        env["WSBRIDGE_GC_TUNING"] = "0"
        return cmd, env, cwd


class WsbridgeRedisOne(WsbridgeMemory):
    """One ``wsbridge serve`` process on the Redis layer; publishers call the layer."""

    metrics = False

    def server_cmd(self, port, redis_url):
        cmd, env, cwd = super().server_cmd(port, redis_url)
        env.update(BENCH_LAYER="redis", BENCH_REDIS_URL=redis_url)
        if self.metrics:
            env["BENCH_METRICS"] = "1"
        return cmd, env, cwd

    def publisher_cmd(self, port, redis_url):
        return [str(venv_python("wsbridge")), "pub_wsbridge.py", "--redis", redis_url]


class WsbridgeRedisOneMetrics(WsbridgeRedisOne):
    metrics = True


class Fastlane:
    """Mixed in before a wsbridge target: its chat consumer declares a fastlane instead
    of the tutorial's handler (``BENCH_FASTLANE=1``, read by wsbridge_app.py)."""

    def server_cmd(self, port, redis_url):
        cmd, env, cwd = super().server_cmd(port, redis_url)  # type: ignore[misc]
        env["BENCH_FASTLANE"] = "1"
        return cmd, env, cwd


class WsbridgeFastlane(Fastlane, WsbridgeMemory):
    """``wsbridge`` with the fastlane consumer."""


class WsbridgeRedisOneFastlane(Fastlane, WsbridgeRedisOne):
    """``wsbridge-redis1`` with the fastlane consumer."""


class WsbridgeRedisOneGc(WsbridgeRedisOne):
    """``wsbridge-redis1`` with the cyclic GC tuned (``BENCH_GC``): an experiment."""

    def __init__(self, name: str, gc_mode: str, description: str) -> None:
        super().__init__(name, "wsbridge", "ws", description)
        self.gc_mode = gc_mode

    def server_cmd(self, port, redis_url):
        cmd, env, cwd = super().server_cmd(port, redis_url)
        env["BENCH_GC"] = self.gc_mode
        return cmd, env, cwd


class WsbridgeFastpath(WsbridgeMemory):
    """The memory-layer target on a copy patched by bench/patches/fastpath.py --pump."""

    def src_dir(self) -> Path:
        return BENCH_DIR / "results" / "fastpath-src"

    def prepare(self) -> None:
        import subprocess
        import sys

        subprocess.run(
            [
                sys.executable,
                str(BENCH_DIR / "patches" / "fastpath.py"),
                str(self.src_dir()),
                "--pump",
            ],
            check=True,
        )

    def server_cmd(self, port, redis_url):
        cmd, env, cwd = super().server_cmd(port, redis_url)
        env["PYTHONPATH"] = f"{self.src_dir()}:{SERVERS}"
        return cmd, env, cwd


#: ``run.py --baseline-src DIR``: the checkout of an earlier commit for ``wsbridge-baseline``.
BASELINE_SRC: list[str] = []


class Baseline:
    """Mixed in before a wsbridge target: wsbridge imported from ``--baseline-src``, so a
    change is measured before and after in one run."""

    name: str

    def server_cmd(self, port, redis_url):
        if not BASELINE_SRC:
            raise SystemExit(f"{self.name} needs --baseline-src DIR (a checkout)")
        cmd, env, cwd = super().server_cmd(port, redis_url)  # type: ignore[misc]
        env["PYTHONPATH"] = f"{BASELINE_SRC[0]}:{SERVERS}"
        return cmd, env, cwd


class WsbridgeBaseline(Baseline, WsbridgeMemory):
    """``wsbridge`` imported from another checkout (``--baseline-src``)."""


class WsbridgeRedisOneBaseline(Baseline, WsbridgeRedisOne):
    """``wsbridge-redis1`` imported from ``--baseline-src`` (a Redis-layer change)."""


class WsbridgeRedis(Target):
    def server_cmd(self, port, redis_url):
        cmd = [
            str(venv_bin("wsbridge", "gunicorn")),
            "-k",
            "gevent",
            "-w",
            "2",
            "--worker-connections",
            "12000",
            "--backlog",
            "4096",
            "-b",
            f"{LOOPBACK}:{port}",
            "--log-level",
            "warning",
            "wsbridge_app:application",
        ]
        env = {
            "BENCH_LAYER": "redis",
            "BENCH_REDIS_URL": redis_url,
            "PYTHONPATH": wsbridge_pythonpath(),
        }
        return cmd, env, SERVERS

    def publisher_cmd(self, port, redis_url):
        return [str(venv_python("wsbridge")), "pub_wsbridge.py", "--redis", redis_url]


class WsbridgeRedisFastlane(Fastlane, WsbridgeRedis):
    """``wsbridge-redis`` (gunicorn -w 2) with the fastlane consumer."""


class WsbridgeUwsgi(WsbridgeRedis):
    """The wsbridge-redis app under uWSGI's gevent loop, two workers (docs: deployment)."""

    def server_cmd(self, port, redis_url):
        _, env, cwd = super().server_cmd(port, redis_url)
        cmd = [
            str(venv_bin("wsbridge", "uwsgi")),
            "--http-socket",
            f"{LOOPBACK}:{port}",
            "--gevent",
            "6000",  # per worker: the kernel may hand one worker most of the sockets
            "--gevent-early-monkey-patch",
            "--master",
            "--processes",
            "2",
            "--lazy-apps",
            "--listen",
            "4096",
            "--disable-logging",
            "--module",
            "wsbridge_app:application",
        ]
        return cmd, env, cwd


class Channels(Target):
    def server_cmd(self, port, redis_url):
        cmd = [
            str(venv_bin("channels", "daphne")),
            "-b",
            LOOPBACK,
            "-p",
            str(port),
            "--verbosity",
            "0",
            "benchsite.asgi:application",
        ]
        env = {"BENCH_REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "benchsite.settings"}
        return cmd, env, SERVERS / "channels_site"

    def publisher_cmd(self, port, redis_url):
        return [str(venv_python("channels")), "pub_channels.py", "--redis", redis_url]


class SocketIO(Target):
    def server_cmd(self, port, redis_url):
        cmd = [
            str(venv_python("socketio")),
            "socketio_server.py",
            "--port",
            str(port),
            "--redis",
            redis_url,
        ]
        return cmd, {}, SERVERS

    def publisher_cmd(self, port, redis_url):
        return [str(venv_python("socketio")), "pub_socketio.py", "--redis", redis_url]


class Raw(Target):
    def server_cmd(self, port, redis_url):
        cmd = [str(venv_python("raw")), "raw_server.py", "--port", str(port), "--redis", redis_url]
        return cmd, {}, SERVERS

    def publisher_cmd(self, port, redis_url):
        return [str(venv_python("raw")), "pub_raw.py", "--redis", redis_url]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        WsbridgeMemory(
            "wsbridge", "wsbridge", "ws", "wsbridge serve, memory layer, one gevent process"
        ),
        WsbridgeMetrics(
            "wsbridge-metrics",
            "wsbridge",
            "ws",
            "wsbridge serve, memory layer, Prometheus metrics on (only by name)",
        ),
        WsbridgeGcDefaults(
            "wsbridge-cpython-gc",
            "wsbridge",
            "ws",
            "wsbridge serve --no-gc-tuning, memory layer (only by name)",
        ),
        WsbridgeRedisOne(
            "wsbridge-redis1",
            "wsbridge",
            "ws",
            "wsbridge serve, Redis layer, one process (only by name)",
        ),
        WsbridgeRedisOneMetrics(
            "wsbridge-redis1-metrics",
            "wsbridge",
            "ws",
            "wsbridge serve, Redis layer, one process, Prometheus metrics on (only by name)",
        ),
        WsbridgeFastlane(
            "wsbridge-fastlane",
            "wsbridge",
            "ws",
            "wsbridge serve, memory layer, fastlane = {'chat.message': 'text'} (only by name)",
        ),
        WsbridgeRedisOneFastlane(
            "wsbridge-redis1-fastlane",
            "wsbridge",
            "ws",
            "wsbridge-redis1 with the fastlane consumer (only by name)",
        ),
        WsbridgeRedisOneGc("wsbridge-redis1-gcoff", "off", "wsbridge-redis1, gc.disable()"),
        WsbridgeRedisOneGc("wsbridge-redis1-gcfreeze", "freeze", "wsbridge-redis1, gc.freeze()"),
        WsbridgeRedisOneGc(
            "wsbridge-redis1-gc50k",
            "50000,20,20",
            "wsbridge-redis1, gc.set_threshold(50000, 20, 20)",
        ),
        WsbridgeFastpath(
            "wsbridge-fastpath",
            "wsbridge",
            "ws",
            "wsbridge serve, memory layer, with bench/patches/fastpath.py --pump "
            "(proposed change, not committed code)",
        ),
        WsbridgeBaseline(
            "wsbridge-baseline",
            "wsbridge",
            "ws",
            "wsbridge serve, memory layer, imported from --baseline-src (only by name)",
        ),
        WsbridgeRedisOneBaseline(
            "wsbridge-redis1-baseline",
            "wsbridge",
            "ws",
            "wsbridge-redis1 imported from --baseline-src (only by name)",
        ),
        WsbridgeRedis(
            "wsbridge-redis",
            "wsbridge",
            "ws",
            "wsbridge, Redis layer, gunicorn -k gevent -w 2 (both workers on core 0)",
            processes=2,
        ),
        WsbridgeRedisFastlane(
            "wsbridge-redis-fastlane",
            "wsbridge",
            "ws",
            "wsbridge-redis (gunicorn -k gevent -w 2) with the fastlane consumer (only by name)",
            processes=2,
        ),
        WsbridgeUwsgi(
            "wsbridge-uwsgi",
            "wsbridge",
            "ws",
            "wsbridge, Redis layer, uwsgi --gevent 6000 --processes 2 (both workers on core 0)",
            processes=2,
        ),
        Channels(
            "channels",
            "channels",
            "ws",
            "Django Channels 4 + daphne + channels_redis, tutorial sync WebsocketConsumer",
        ),
        SocketIO(
            "socketio",
            "socketio",
            "sio",
            "python-socketio, gevent + gevent-websocket, RedisManager",
        ),
        Raw(
            "raw",
            "raw",
            "ws",
            "raw floor: gevent-websocket broadcast loop fed by one Redis subscription",
        ),
    ]
}
