"""Channels publisher: group_send through channels_redis from outside the server, the way a
view or Celery task does (async_to_sync), in bench/.venvs/channels."""

import os
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "servers", "channels_site")
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

import django  # noqa: E402
from _common import parse, run  # noqa: E402

args = parse(__doc__)
os.environ["BENCH_REDIS_URL"] = args.redis
django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402

layer = get_channel_layer()
group_send = async_to_sync(layer.group_send)
run(
    args,
    lambda payload: group_send(f"chat_{args.group}", {"type": "chat.message", "message": payload}),
)
