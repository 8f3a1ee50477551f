"""wsbridge.metrics without a server: the missing extra, buckets, and flushes add only deltas."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, server_env


def test_without_prometheus_client_wrap_names_the_extra():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from wsbridge import wrap\n"
        "from wsbridge.exceptions import ConfigurationError\n"
        "try:\n"
        "    wrap(lambda e, s: [], metrics_path='/_wsbridge/metrics')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=server_env(),
    )
    assert done.returncode == 0, done.stderr
    assert 'pip install "wsbridge-gevent[metrics]"' in done.stdout, done.stdout


def test_timings_buckets_follow_le_and_take_starts_over():
    from wsbridge.metrics import Timings

    timings = Timings((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.5):
        timings.observe(seconds)
    counts, total = timings.take()
    assert counts == [2, 1, 1]  # le=0.001 holds 0.001 itself; 0.5 goes to +Inf
    assert abs(total - 0.5035) < 1e-9
    assert timings.take() == ([0, 0, 0], 0.0)


def test_two_flushes_add_only_what_changed_in_between():
    code = (
        "from wsbridge import metrics\n"
        "from wsbridge.drops import record_drop\n"
        "metrics.enable()\n"
        "metrics.STATS.websocket_messages_in += 2\n"
        "record_drop('queue_full', 3)\n"
        "metrics.flush()\n"
        "metrics.STATS.websocket_messages_in += 1\n"
        "metrics.record_handshake('refused', 'origin')\n"
        "body = metrics.render()[0].decode()\n"
        "print(body)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=server_env(),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'wsbridge_messages_received_total{transport="websocket"} 3.0' in out
    assert 'wsbridge_dropped_messages_total{reason="queue_full"} 3.0' in out
    assert 'wsbridge_handshakes_total{reason="origin",result="refused"} 1.0' in out


def test_presence_entries_and_history_recoveries_come_from_the_serving_layer():
    from wsbridge import metrics
    from wsbridge.layers.memory import MemoryLayer

    layer = MemoryLayer()
    try:
        metrics.instrument_layer(layer)
        channel = layer.new_channel()
        layer.group_add("room", channel)
        assert metrics.presence_entries() == 0
        layer.presence_track("room", channel, user="ada")
        assert metrics.presence_entries() == 1
        layer.history_counters["recovered"] += 2
        layer.history_counters["not_recovered"] += 1
        counts = metrics.layer_history_counts()
        assert counts["recovered"] >= 2 and counts["not_recovered"] >= 1
        assert metrics.layer_timings("group_add").take()[0] != [0] * (
            len(metrics.LAYER_BUCKETS) + 1
        )
    finally:
        layer.close()


def test_the_servers_refusals_are_exported_per_reason():
    code = (
        "from wsbridge import metrics\n"
        "from wsbridge.transport.limits import refused\n"
        "refused('header_timeout', 'test')\n"
        "refused('header_timeout', 'test')\n"
        "print(metrics.render()[0].decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=server_env(),
    )
    assert done.returncode == 0, done.stderr
    assert 'wsbridge_refusals_total{reason="header_timeout"} 2.0' in done.stdout
