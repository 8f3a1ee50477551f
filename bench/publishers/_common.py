"""What every publisher shares: options, pacing, the payload, the report line.

Each publisher is a separate process, the way a Django view or a Celery
task publishes: it stamps each message with the wall clock just before
handing it to the target's publish call, so the client's latency covers the
whole way (publish call, Redis or HTTP, server fan-out, socket).
"""

import argparse
import json
import time


def parse(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between messages")
    parser.add_argument("--group", default="bench")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--url", default=None, help="HTTP endpoint (memory-layer target)")
    return parser.parse_args()


def run(args: argparse.Namespace, publish) -> None:
    """Call ``publish(payload_dict)`` ``count`` times, paced; print one JSON line."""
    errors = 0
    took = []
    start = time.monotonic()
    for seq in range(args.count):
        due = start + seq * args.interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        payload = {"seq": seq, "ts": time.time() * 1000.0}
        t = time.perf_counter()
        try:
            publish(payload)
        except Exception as exc:  # count and go on: the client reports what arrived
            errors += 1
            if errors == 1:
                print(json.dumps({"event": "warning", "error": repr(exc)}), flush=True)
        took.append((time.perf_counter() - t) * 1000.0)
    took.sort()
    print(
        json.dumps(
            {
                "event": "published",
                "count": args.count - errors,
                "errors": errors,
                "publish_call_ms_p50": round(took[len(took) // 2], 3) if took else None,
                "publish_call_ms_max": round(took[-1], 3) if took else None,
                "elapsed_s": round(time.monotonic() - start, 3),
            }
        ),
        flush=True,
    )
