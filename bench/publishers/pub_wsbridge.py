"""wsbridge publisher, in the project's venv.

With ``--redis``: the Redis layer's ``group_send`` from this separate process,
as a view or Celery task would call it. With ``--url``: an HTTP POST to the
served app's ``/bench/publish`` view, which calls ``group_send`` inside the
server process (the memory-layer target has no other way in).
"""

import json
import urllib.request

from _common import parse, run

args = parse(__doc__)

if args.redis:
    from wsbridge.layers import build_layer

    layer = build_layer({"BACKEND": "redis", "CONFIG": {"hosts": [args.redis]}})
    group = "chat." + args.group

    def publish(payload):
        layer.group_send(group, {"type": "chat.message", "text": json.dumps(payload)})

else:
    opener = urllib.request.build_opener()

    def publish(payload):
        body = json.dumps({"group": args.group, "payload": payload}).encode()
        req = urllib.request.Request(
            args.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with opener.open(req, timeout=10) as resp:
            resp.read()


run(args, publish)
