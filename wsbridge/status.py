"""``wsbridge status`` and ``wsbridge check``: look at the channel layer from outside.

``status`` prints, per shard, whether it is reachable, the groups with their
member counts and the queue depths (channels, process inboxes, delayed
messages); ``--json`` prints ``layer.stats()`` as it is. ``check`` verifies
the set-up a server needs: gevent's monkey-patching, and that every shard
answers and carries a message there and back.

The layer comes from ``--layer`` (``memory``, or one or more Redis URLs, one
per shard: ``--layer redis://a:6379/0 --layer redis://b:6379/0``, with
``?prefix=...&compat=channels_redis`` on the first), from
``--layer-settings MODULE`` (a module defining Channels' ``CHANNEL_LAYERS``
dict, such as a Django settings module) with ``--alias``, or else from the
process's configured layer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import sys
from typing import Any, TextIO

from .exceptions import WSBridgeError
from .layers import build_layer
from .layers.base import BaseChannelLayer

__all__ = [
    "add_status_arguments",
    "run_status",
    "add_check_arguments",
    "run_check",
    "layer_from_args",
    "format_stats",
]


def _add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layer",
        action="append",
        metavar="URL",
        help="'memory' or a redis://, rediss:// or unix:// URL; repeat for each shard "
        "(options on the first: ?prefix=...&compat=channels_redis). "
        "Default: $WSBRIDGE_LAYER, else the configured layer",
    )
    parser.add_argument(
        "--layer-settings",
        metavar="MODULE",
        help="a module defining CHANNEL_LAYERS (Channels' shape), e.g. mysite.settings",
    )
    parser.add_argument(
        "--alias", default="default", help="which CHANNEL_LAYERS entry (default: default)"
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``wsbridge status``."""
    _add_layer_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the raw stats as JSON")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``wsbridge check``."""
    _add_layer_arguments(parser)


def layer_from_args(args: argparse.Namespace) -> BaseChannelLayer:
    """The layer the options name (see the module docstring).

    Raises:
        ConfigurationError: for an unusable ``--layer`` or settings module.
    """
    from .layers.urls import LAYER_ENV, from_url, split_urls

    urls = getattr(args, "layer", None)
    module_name = getattr(args, "layer_settings", None)
    # --layer, then WSBRIDGE_LAYER, then --layer-settings, then the process's layer.
    if split_urls(urls) or os.environ.get(LAYER_ENV, "").strip() or not module_name:
        return from_url(urls, env=True)
    from .exceptions import ConfigurationError

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        layers = importlib.import_module(module_name).CHANNEL_LAYERS
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"--layer-settings {module_name}: {exc}") from exc
    alias = getattr(args, "alias", "default") or "default"
    if alias not in layers:
        raise ConfigurationError(f"{module_name}.CHANNEL_LAYERS has no {alias!r} entry")
    return build_layer(layers[alias])


# -- status -----------------------------------------------------------------------------


def run_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the layer's state; exit status 1 when a shard is unreachable, 2 on bad options."""
    out = out or sys.stdout
    try:
        layer = layer_from_args(args)
    except WSBridgeError as exc:
        print(f"wsbridge status: {exc}", file=sys.stderr)
        return 2
    try:
        stats = layer.stats()
        stats["processes"] = _processes(layer)
    finally:
        layer.close()
    if getattr(args, "json", False):
        json.dump(stats, out, indent=2, sort_keys=True, default=str)
        out.write("\n")
    else:
        out.write(format_stats(layer, stats))
    shards = stats.get("shards", [])
    return 1 if any(not shard.get("reachable") for shard in shards) else 0


def format_stats(layer: BaseChannelLayer, stats: dict[str, Any]) -> str:
    """Human-readable ``stats()``: one block per shard."""
    lines = [f"layer: {type(layer).__name__}" + _layout(stats)]
    if "shards" not in stats:  # the memory layer: this process only
        lines.append("  (in-memory: shows this process only)")
        shards = [
            {
                "name": "memory",
                "reachable": True,
                "groups": stats.get("groups", {}),
                "queues": stats.get("channels", {}),
                "delayed": 0,
            }
        ]
    else:
        shards = stats["shards"]
    for index, shard in enumerate(shards):
        if not shard.get("reachable"):
            lines.append(f"shard {index} {shard['name']}: UNREACHABLE ({shard.get('error', '')})")
            continue
        latency = f" ({shard['latency_ms']} ms)" if "latency_ms" in shard else ""
        groups = shard.get("groups", {})
        queues = shard.get("queues", {})
        lines.append(f"shard {index} {shard['name']}: reachable{latency}")
        lines.append(
            f"  groups: {shard.get('group_count', len(groups))} ({sum(groups.values())} members)"
        )
        lines.extend(f"    {name:<40} {count} members" for name, count in sorted(groups.items()))
        lines.append(f"  queues: {shard.get('queue_count', len(queues))}")
        lines.extend(f"    {name:<40} {depth} waiting" for name, depth in sorted(queues.items()))
        lines.append(f"  delayed: {shard.get('delayed', 0)}")
    lines.extend(format_processes(stats.get("processes")))
    return "\n".join(lines) + "\n"


def _processes(layer: BaseChannelLayer) -> list[dict[str, Any]] | str:
    from .heartbeat import read_processes

    try:
        return read_processes(layer)
    except WSBridgeError as exc:
        return f"unavailable: {exc}"


def format_processes(processes: list[dict[str, Any]] | str | None) -> list[str]:
    """One line per live process: role, age, gauges, drop and refusal counters per reason."""
    if processes is None:
        return []
    if isinstance(processes, str):
        return [f"processes: {processes}"]
    lines = [f"processes: {len(processes)} alive (each publishes a heartbeat with a TTL)"]
    for proc in processes:
        age = max(0.0, float(proc.get("beat", 0)) - float(proc.get("started", 0)))
        gauges = " ".join(f"{k} {v}" for k, v in sorted((proc.get("gauges") or {}).items()))
        drops = proc.get("drops") or {}
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none"
        refusals = proc.get("refusals") or {}
        refused = ", ".join(f"{k}={v}" for k, v in sorted(refusals.items()))
        lines.append(
            f"  {proc.get('id', '?'):<30} {proc.get('role', '?'):<7} up {age:.0f}s  "
            f"{gauges}  dropped: {dropped}" + (f"  refused: {refused}" if refused else "")
        )
    return lines


def _layout(stats: dict[str, Any]) -> str:
    if "layout" not in stats:
        return ""
    return f" (format {stats['layout']}, prefix {stats['prefix']!r})"


# -- check -------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Check monkey-patching and the layer; print one line per check; 1 if any failed."""
    out = out or sys.stdout
    failures = 0
    from gevent import monkey

    from .runtime import unpatched_modules

    if not monkey.is_module_patched("socket"):
        # What `wsbridge serve`/`worker` do first; failing here means they would too.
        monkey.patch_all()
    missing = unpatched_modules()
    if missing:
        failures += 1
        out.write(f"FAIL monkey-patching: not patched: {', '.join(missing)}\n")
    else:
        out.write("ok   monkey-patching: socket, threads, time and select are gevent's\n")
    try:
        layer = layer_from_args(args)
    except WSBridgeError as exc:
        out.write(f"FAIL layer configuration: {exc}\n")
        return 1
    try:
        failures += _check_layer(layer, out)
    finally:
        layer.close()
    out.write("all checks passed\n" if not failures else f"{failures} check(s) failed\n")
    return 1 if failures else 0


def _check_layer(layer: BaseChannelLayer, out: TextIO) -> int:
    failures = 0
    stats = layer.stats()
    for shard in stats.get("shards", []):
        if shard.get("reachable"):
            out.write(
                f"ok   shard {shard['name']}: reachable ({shard.get('latency_ms', '?')} ms)\n"
            )
        else:
            failures += 1
            out.write(f"FAIL shard {shard['name']}: unreachable ({shard.get('error', '')})\n")
    if failures:
        return failures
    channel = f"wsbridge.check.{secrets.token_hex(6)}"
    try:
        layer.send(channel, {"type": "wsbridge.check"})
        ok = layer.receive(channel, timeout=5) == {"type": "wsbridge.check"}
    except WSBridgeError as exc:
        ok = False
        out.write(f"FAIL layer round trip: {exc}\n")
        return 1
    out.write(
        f"{'ok  ' if ok else 'FAIL'} layer round trip: {type(layer).__name__} send + receive\n"
    )
    return 0 if ok else 1


#: ``wsbridge.cli`` looks these up by name too.
add_arguments = add_status_arguments
run = run_status
