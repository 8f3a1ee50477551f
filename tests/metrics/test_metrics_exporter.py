"""The exporter's metric table and the table users read (wsbridge.metrics' docstring) agree."""

from __future__ import annotations

import re

from wsbridge import metrics
from wsbridge.metrics_exporter import METRICS


def exposed_name(kind: str, name: str) -> str:
    # prometheus_client exposes a Counter as <name>_total
    return f"{name}_total" if kind == "Counter" else name


def documented() -> dict[str, tuple[str, str]]:
    """{metric name: (type, labels)} from the reST table of wsbridge.metrics' docstring."""
    rows = re.findall(r"^``(wsbridge_\w+)``[ ]+(\w+)[ ]*(.*)$", metrics.__doc__ or "", re.M)
    return {name: (kind, labels.strip()) for name, kind, labels in rows}


def test_every_metric_is_documented_with_its_type_and_labels():
    docs = documented()
    assert len(docs) == len(METRICS)
    for spec in METRICS.values():
        kind, labels = docs[exposed_name(spec.kind, spec.name)]
        assert kind == spec.kind.lower()
        if spec.labels:
            assert labels.startswith(", ".join(spec.labels))


def test_the_flush_fills_every_metric_of_the_table():
    metrics.reset()
    try:
        metrics.enable()
        metrics.STATS.websocket_messages_in += 2
        metrics.flush()
        body, _ = metrics.render()
        text = body.decode()
        for spec in METRICS.values():
            assert f"# TYPE {spec.name}" in text, spec.name
        assert 'wsbridge_messages_received_total{transport="websocket"} 2.0' in text
    finally:
        metrics.reset()
