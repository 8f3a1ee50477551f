"""Raw floor publisher: one Redis PUBLISH per message (runs in bench/.venvs/raw)."""

import json

import redis
from _common import parse, run

args = parse(__doc__)
client = redis.Redis.from_url(args.redis)
run(args, lambda payload: client.publish("bench.fanout", json.dumps(payload)))
