"""A round-robin HTTP proxy for the tests: each request goes to the next backend.

It speaks plain HTTP/1.1 only, so WebSocket upgrades fail through it (as
behind an old proxy) and the browser client falls back to long-poll; its
counters show which backend served what. A backend that refuses connections
(stopped) or drops one unanswered (stopping) is skipped, as a load balancer
with health checks would.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections import Counter
from http.client import RemoteDisconnected
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"}


class RoundRobinProxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.served: Counter[tuple[int, str]] = Counter()
        turn = itertools.cycle(range(len(backends)))
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.forward()

            do_POST = do_OPTIONS = do_HEAD = do_GET

            def forward(self) -> None:
                if "websocket" in self.headers.get("Upgrade", "").lower():
                    self.send_error(400, "this proxy does not pass WebSocket upgrades")
                    return
                with lock:
                    first = next(turn)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                for i in range(len(proxy.backends)):
                    port = proxy.backends[(first + i) % len(proxy.backends)]
                    upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    try:
                        upstream.request(self.command, self.path, body=body, headers=headers)
                        response = upstream.getresponse()
                        data = response.read()
                        break
                    except (ConnectionRefusedError, ConnectionResetError, RemoteDisconnected):
                        # Stopped, or stopping (closed with our request unread): the next one.
                        # Only safe because long-poll requests may be repeated (seq, acks).
                        continue
                    finally:
                        upstream.close()
                else:
                    self.send_error(502, "no backend answers")
                    return
                proxy.served[(port, self.path.split("?")[0])] += 1
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
