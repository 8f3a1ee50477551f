"""Long-poll sessions across a graceful restart: how long the hand-off and the adoption take.

    .venv/bin/python bench/longpoll_handoff_bench.py [--sessions 5000] [--clients 32]

Starts two ``wsbridge serve`` processes on the Redis layer at 127.0.0.1:6379
(a random prefix; tests/transport/lp_gunicorn_app.py), opens N sessions on
the first, each with one message sent and echoed but not acked, sends it
SIGTERM and times its exit (every session handed over), then polls every
session once through the second process (``wait: 0``, C client threads) and
checks that each was adopted with its unacked message and a new token.
Prints a JSON report last. Bounded: N sessions, one restart, timeouts on
every request and process.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "transport"))
sys.path.insert(0, ROOT)

from lp_support import ServeProcess  # noqa: E402


def post(port: int, op: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST", "/_wsbridge/lp/" + op, json.dumps(body), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    env = {
        "LP_REDIS_PREFIX": "wsbridge-hob-" + secrets.token_hex(4),
        "WSBRIDGE_SECRET": "bench-secret-0123456789",
        "LP_POLL_TIMEOUT": "20",
        "LP_SESSION_TIMEOUT": "60",
    }
    old, new = (
        ServeProcess("lp_gunicorn_app:application", env),
        ServeProcess("lp_gunicorn_app:application", env),
    )
    report: dict = {"sessions": args.sessions, "clients": args.clients}
    try:
        with ThreadPoolExecutor(args.clients) as pool:
            started = time.monotonic()
            tokens = list(
                pool.map(
                    lambda _: post(old.port, "open", {"path": "/ws/echo/"})[1]["token"],
                    range(args.sessions),
                )
            )
            sent = list(
                pool.map(
                    lambda token: post(
                        old.port, "send", {"token": token, "messages": [{"seq": 1, "text": "x"}]}
                    ),
                    tokens,
                )
            )
            assert all(status == 200 for status, _ in sent)
            report["open_and_send_s"] = round(time.monotonic() - started, 3)
            started = time.monotonic()
            report["exit_status"] = old.terminate(120)
            report["handoff_exit_s"] = round(time.monotonic() - started, 3)
            started = time.monotonic()
            polls = list(
                pool.map(
                    lambda token: post(new.port, "poll", {"token": token, "ack": 0, "wait": 0}),
                    tokens,
                )
            )
            elapsed = time.monotonic() - started
        adopted = sum(
            1
            for (status, body), token in zip(polls, tokens, strict=True)
            if status == 200
            and body["messages"] == [{"seq": 1, "text": "x"}]
            and body.get("token") not in (None, token)
        )
        report.update(
            adopted=adopted,
            adopt_all_s=round(elapsed, 3),
            adopt_per_s=round(args.sessions / elapsed),
        )
        print(
            f"{args.sessions} sessions: handed over and process exited in "
            f"{report['handoff_exit_s']} s; {adopted} adopted with their unacked message in "
            f"{report['adopt_all_s']} s ({report['adopt_per_s']}/s, {args.clients} clients)"
        )
    finally:
        old.stop()
        new.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
