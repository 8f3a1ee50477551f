"""The bridge under each server: wsbridge serve, gunicorn (3 workers kinds), and the
servers that cannot hand a socket over (a clear 500, never a hang).
"""

from __future__ import annotations

import logging
import re
import socketserver
import subprocess
import sys
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from websockets.sync.client import connect

from tests.conftest import ROOT, free_port, server_env, start_process
from tests.transport.wsclient import handshake_bytes, raw_handshake

APP = "tests.transport.ws_apps:application"


def echo_round_trips(url: str, count: int = 3) -> list[str]:
    """Open ``count`` connections, echo on each, close cleanly; the extensions seen."""
    seen = []
    for i in range(count):
        with connect(url) as ws:
            ws.send(f"hello {i}")
            assert ws.recv(timeout=5) == f"hello {i}"
            ws.send(b"\x00\xff" * 1000)
            assert ws.recv(timeout=5) == b"\x00\xff" * 1000
            seen.append(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
    return seen


def gunicorn(tmp_path, worker: str, workers: int = 1):
    """``workers`` > 1 run on the Redis layer: an unshared layer refuses several workers."""
    port = free_port()
    log = tmp_path / f"gunicorn-{worker.rsplit('.', 1)[-1]}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker,
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "debug",
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "5",
        "--no-control-socket",  # parallel masters would share ~/.gunicorn/gunicorn.ctl
        APP,
    ]
    env = None
    if workers > 1:
        import secrets

        prefix = f"wsbsrv{secrets.token_hex(4)}"
        env = server_env(WSBRIDGE_LAYER=f"redis://127.0.0.1:6379/0?prefix={prefix}")
    return start_process(command, log, port, env=env)


def assert_clean_log(text: str) -> None:
    assert "Traceback" not in text
    assert not re.search(r"\[(ERROR|CRITICAL)\]", text), text
    assert '" 500 ' not in text and " 500 -" not in text


def test_gunicorn_gevent_two_workers_echo_and_log_nothing_wrong(tmp_path):
    server = gunicorn(tmp_path, "gevent", workers=2)
    try:
        assert all(
            ext.startswith("permessage-deflate")
            for ext in echo_round_trips(server.ws_url("/echo/"), 6)
        )
        with urllib.request.urlopen(server.url("/plain/")) as answer:
            assert answer.read() == b"site GET /plain/"
    finally:
        status = server.stop()
    log = server.log()
    assert status == 0
    assert_clean_log(log)
    assert log.count("Booting worker") == 2


def test_gevent_websocket_worker_keeps_working(tmp_path):
    worker = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
    server = gunicorn(tmp_path, worker)
    try:
        extensions = echo_round_trips(server.ws_url("/echo/"), 3)
        # The first upgrade per worker was answered by gevent-websocket (no
        # compression); wsbridge answers the later ones itself.
        assert extensions[0] == ""
        assert all(ext.startswith("permessage-deflate") for ext in extensions[1:])
        with urllib.request.urlopen(server.url("/plain/")) as answer:
            assert answer.read() == b"site GET /plain/"
    finally:
        server.stop()
    assert_clean_log(server.log())


def test_gunicorn_gevent_pywsgi_worker(tmp_path):
    server = gunicorn(tmp_path, "gevent_pywsgi")
    try:
        echo_round_trips(server.ws_url("/echo/"), 2)
    finally:
        server.stop()
    assert_clean_log(server.log())


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_threaded_server_gets_a_clear_500_not_a_hang(caplog):
    from tests.transport.ws_apps import application

    httpd = make_server(
        "127.0.0.1", 0, application, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        with caplog.at_level(logging.ERROR, logger="wsbridge"):
            status, headers, body, sock = raw_handshake(port, handshake_bytes("/echo/", port))
            with sock:
                while len(body) < int(headers["content-length"]):
                    body += sock.recv(65536)
        assert status == 500
        assert b"cannot hand the client socket over" in body  # our answer, not a crash page
        assert any(
            r.levelno == logging.ERROR
            and "wsbridge serve" in r.getMessage()
            and "gunicorn -k gevent" in r.getMessage()
            for r in caplog.records
        )
    finally:
        httpd.shutdown()
        httpd.server_close()


_UNPATCHED_SERVER = r"""
import logging, socket, sys, threading, urllib.request
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
from tests.transport.ws_apps import application
from wsbridge.transport.server import make_server

server = make_server(application, "127.0.0.1", 0)
server.start()
port = server.server_port

def handshake():
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % port
    )
    status = sock.recv(65536).split(b"\r\n", 1)[0]
    sock.close()
    print("HANDSHAKE", status.decode())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/plain/", timeout=5) as answer:
        print("PLAIN", answer.read().decode())

# The client runs in a real thread: nothing in this process is patched.
client = threading.Thread(target=handshake)
client.start()
import gevent
while client.is_alive():
    gevent.sleep(0.01)
server.stop(timeout=1)
"""


def _run_unpatched(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=server_env(),
        cwd=str(ROOT),
        timeout=60,
    )


def test_missing_monkey_patching_is_a_clear_500():
    # A process that never patched: wsbridge must refuse WebSockets, loudly,
    # while plain HTTP still reaches the site.
    done = _run_unpatched(_UNPATCHED_SERVER)
    assert done.returncode == 0, done.stderr
    assert "HANDSHAKE HTTP/1.1 500" in done.stdout
    assert "PLAIN site GET /plain/" in done.stdout
    assert "monkey-patching is missing" in done.stderr


def test_serve_refuses_to_start_without_monkey_patching():
    done = _run_unpatched(
        "from wsbridge.exceptions import ConfigurationError\n"
        "from wsbridge.transport.server import serve\n"
        "try:\n"
        "    serve(lambda environ, start_response: [], '127.0.0.1', 0)\n"
        "except ConfigurationError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "REFUSED" in done.stdout and "monkey-patching is missing" in done.stdout


def test_serve_command_takes_module_spec_and_routing(wsbridge_serve, tmp_path):
    # "module" alone uses `application`; --consumers imports a consumer module first.
    (tmp_path / "plainsite.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'plain site']\n"
    )
    (tmp_path / "siteconsumers.py").write_text(
        "from wsbridge import router, WebsocketConsumer\n"
        "@router.websocket('ws/hi/')\n"
        "class Hi(WebsocketConsumer):\n"
        "    def receive(self, text_data=None, bytes_data=None):\n"
        "        self.send(text_data='hi ' + text_data)\n"
    )
    env = server_env(PYTHONPATH=f"{tmp_path}:{server_env()['PYTHONPATH']}")
    args = ("--consumers", "siteconsumers", "--access-log", "-")
    server = wsbridge_serve("plainsite", *args, env=env)
    with connect(server.ws_url("/ws/hi/")) as ws:
        ws.send("there")
        assert ws.recv(timeout=5) == "hi there"
    with urllib.request.urlopen(server.url("/")) as answer:
        assert answer.read() == b"plain site"
    assert 'GET /ws/hi/ HTTP/1.1" 101' in server.log()


def test_serve_command_explains_a_bad_app_spec():
    done = subprocess.run(
        [sys.executable, "-m", "wsbridge", "serve", "no_such_module_xyz:app", "--port", "0"],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot import 'no_such_module_xyz'" in done.stderr


# -- the server flavours (wsbridge.transport.servers) ------------------------------------

_HAND_MADE_PYWSGI = r"""
from gevent import monkey; monkey.patch_all()
import socket, sys
import gevent
from gevent import pywsgi
from websockets.frames import Frame, Opcode
from tests.transport.ws_apps import application
from tests.transport.wsclient import handshake_bytes, read_response

server = pywsgi.WSGIServer(("127.0.0.1", 0), application, log=None)  # gevent's own handler
server.start()
port = server.server_port
sock = socket.create_connection(("127.0.0.1", port), timeout=5)
sock.sendall(handshake_bytes("/echo/", port))
status, headers, rest = read_response(sock)
print("HANDSHAKE", status)
sock.sendall(Frame(Opcode.TEXT, b"hand-made").serialize(mask=True))
data = rest
while len(data) < 11:
    data += sock.recv(65536)
print("ECHO", data[2:11].decode())
sock.close()
server.stop(timeout=1)
"""


def test_a_hand_made_pywsgi_server_lends_its_socket():
    # gevent's stock handler is found as the owner of its start_response (no stack walk).
    done = _run_unpatched(_HAND_MADE_PYWSGI)
    assert done.returncode == 0, done.stderr
    assert "HANDSHAKE 101" in done.stdout
    assert "ECHO hand-made" in done.stdout
    assert "Traceback" not in done.stderr


def test_each_flavour_has_one_handover_tried_in_order():
    from wsbridge.transport import servers
    from wsbridge.transport.servers import gevent_websocket, gunicorn, pywsgi, uwsgi

    assert servers.HANDOVERS == (
        gevent_websocket.handover,
        pywsgi.handover,
        gunicorn.handover,
        uwsgi.handover,
    )
    for handover in servers.HANDOVERS:
        assert handover({}, None) is None  # not this server: the next one is asked


def test_no_server_to_lend_a_socket_is_server_not_supported():
    import pytest

    from wsbridge.exceptions import ServerNotSupported
    from wsbridge.transport.servers import take_over

    with pytest.raises(ServerNotSupported, match="wsbridge serve"):
        take_over({"SERVER_SOFTWARE": "wsgiref"}, lambda *a: None)


def test_serving_modules_never_walk_the_stack_nor_import_the_worker():
    code = (
        "import sys, json\n"
        "import wsbridge.transport.server, wsbridge.transport.servers, wsbridge.transport.wsgi\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('wsbridge.'))))\n"
    )
    done = _run_unpatched(code)
    assert done.returncode == 0, done.stderr
    assert "wsbridge.worker" not in done.stdout and "wsbridge.cli" not in done.stdout
    for path in (ROOT / "wsbridge" / "transport").rglob("*.py"):
        assert "_getframe" not in path.read_text(), path


def test_the_old_import_paths_still_work():
    from wsbridge_django import restart

    from wsbridge import cli, runtime
    from wsbridge.transport import server, shutdown, uwsgi
    from wsbridge.transport.servers import gunicorn
    from wsbridge.transport.servers import pywsgi as pywsgi_server
    from wsbridge.transport.servers import uwsgi as uwsgi_server

    assert server.make_server is pywsgi_server.make_server
    assert server.load_app is runtime.load_app and server.tune_gc is runtime.tune_gc
    assert server.WSBridgeHandler is pywsgi_server.handler_class()
    assert uwsgi.uwsgi_handover is uwsgi_server.handover
    assert uwsgi.FORK_HOOKS_MISSING is uwsgi_server.FORK_HOOKS_MISSING
    # gunicorn config files name these hooks
    assert shutdown.post_worker_init is gunicorn.post_worker_init
    assert restart.post_worker_init is gunicorn.post_worker_init
    assert shutdown.install_restart_handlers is gunicorn.install_restart_handlers
    assert callable(cli.add_serve_arguments) and callable(cli.run_serve)


def test_one_shutdown_logs_what_it_closed(caplog):
    from wsbridge_django.restart import close_for_restart

    from wsbridge.transport.shutdown import GOING_AWAY, SERVICE_RESTART, shutdown
    from wsbridge.transport.uwsgi import close_for_reload

    with caplog.at_level(logging.INFO, logger="wsbridge.shutdown"):
        assert shutdown(GOING_AWAY, apps=[]) == 0
        assert shutdown(SERVICE_RESTART, apps=[], label="uWSGI reload") == 0
        close_for_reload()
        close_for_restart()
    lines = [r.getMessage() for r in caplog.records if r.name == "wsbridge.shutdown"]
    assert lines[0].startswith("shutdown: closing 0 WebSocket(s) with 1001 (going away)")
    assert lines[1].startswith("uWSGI reload: closing 0 WebSocket(s) with 1012 (service restart)")
    assert lines[2].startswith("uWSGI reload: closing 0 WebSocket(s) with 1012")
    assert lines[3].startswith("restart: closing 0 WebSocket(s) with 1012")


def test_wsbridge_serve_turns_nagle_off_on_each_connection(monkeypatch):
    # With Nagle on, a long-poll answer's body waited for the client's delayed
    # ACK of its head: 44 ms per answer on loopback (send + poll took 88 ms).
    import socket as stdlib_socket

    import gevent

    from wsbridge.transport.servers import pywsgi_limits
    from wsbridge.transport.servers.pywsgi import make_server

    seen = []
    original = pywsgi_limits.set_nodelay

    def recording(sock):
        original(sock)
        seen.append(sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY))

    monkeypatch.setattr(pywsgi_limits, "set_nodelay", recording)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = make_server(app, "127.0.0.1", 0)
    server.start()
    try:
        with gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert seen and all(seen), seen
    finally:
        server.stop(timeout=1)
