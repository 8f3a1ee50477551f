"""python-socketio publisher: a write-only RedisManager emitting to the room, as its docs show
for emitting from an external process (runs in bench/.venvs/socketio)."""

import socketio
from _common import parse, run

args = parse(__doc__)
manager = socketio.RedisManager(args.redis, write_only=True)
run(args, lambda payload: manager.emit("chat", payload, room=args.group))
