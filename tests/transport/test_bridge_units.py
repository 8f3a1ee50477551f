"""Pure functions of the bridge: Origin rules, the scope, options, dispatch."""

from __future__ import annotations

import pytest

from wsbridge import Router, WebsocketConsumer
from wsbridge.transport.scope import build_scope, parse_cookies, request_path
from wsbridge.transport.websocket import WebSocketOptions
from wsbridge.transport.wsgi import WSBridgeApp, check_origin, wrap


@pytest.mark.parametrize(
    "origin, host, allowed, ok",
    [
        (None, "a.test", None, True),  # non-browser clients send no Origin
        ("http://a.test", "a.test", None, True),
        ("http://a.test:80", "a.test", None, True),
        ("http://A.TEST", "a.test", None, True),
        ("http://a.test:8000", "a.test:8000", None, True),
        ("http://evil.test", "a.test", None, False),
        ("http://a.test:8001", "a.test:8000", None, False),
        ("null", "a.test", None, False),
        ("https://app.example.com", "a.test", ["https://*.example.com"], True),
        ("http://app.example.com", "a.test", ["https://*.example.com"], False),
        ("http://app.example.com", "a.test", ["*.example.com"], True),
        ("http://localhost:3000", "a.test", ["localhost:*"], True),
        ("http://other.test", "a.test", ["*"], True),
    ],
)
def test_origin_rules(origin, host, allowed, ok):
    assert check_origin(origin, host, allowed) is ok


def test_scope_from_environ():
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/caf\xc3\xa9/",  # WSGI: UTF-8 bytes seen as latin-1
        "QUERY_STRING": "a=1",
        "SERVER_NAME": "example.test",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "example.test:8000",
        "HTTP_COOKIE": 'sessionid=abc; theme="dark"; broken',
        "HTTP_SEC_WEBSOCKET_PROTOCOL": "v2.chat, v1.chat",
        "wsgi.url_scheme": "https",
    }
    scope = build_scope(environ, "websocket")
    assert scope["path"] == "/café/"
    assert scope["query_string"] == b"a=1"
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["127.0.0.1", 50000]
    assert scope["server"] == ["example.test", 8000]
    assert scope["cookies"] == {"sessionid": "abc", "theme": "dark"}
    assert scope["subprotocols"] == ["v2.chat", "v1.chat"]
    assert (b"host", b"example.test:8000") in scope["headers"]
    assert build_scope(environ, "http")["scheme"] == "https"


def test_helpers_never_raise_on_odd_input():
    assert parse_cookies(";;=;a") == {}
    assert request_path({}) == "/"
    assert request_path({"PATH_INFO": "/\xff"}) == "/\ufffd"


@pytest.mark.parametrize(
    "bad",
    [
        {"server_max_window_bits": 8},
        {"client_max_window_bits": 16},
        {"compression_mem_level": 0},
        {"ping_timeout": 0},
        {"ping_interval": -1},
        {"max_outbound_bytes": 0},
    ],
)
def test_options_are_validated(bad):
    with pytest.raises(ValueError):
        WebSocketOptions(**bad)


def test_options_defaults_are_safe_and_frozen():
    options = WebSocketOptions()
    assert options.max_message_size == 1024 * 1024
    assert options.compression and options.ping_interval
    with pytest.raises(AttributeError):
        options.max_message_size = None  # type: ignore[misc]
    assert WebSocketOptions(compression=False).extensions() == []


def test_dispatch_table():
    router = Router()

    @router.websocket("ws/")
    class C(WebsocketConsumer):
        pass

    def site(environ, start_response):
        return [b"site"]

    def poll(environ, start_response):
        return [b"poll"]

    bridge = wrap(site, router=router)
    assert isinstance(bridge, WSBridgeApp)
    bridge.mount("/_wsbridge/test-poll/", poll)
    upgrade = {"HTTP_UPGRADE": "websocket", "PATH_INFO": "/ws/"}
    assert bridge.dispatch(upgrade) == bridge.serve_websocket
    assert (
        bridge.dispatch({**upgrade, "PATH_INFO": "/other/"}) == bridge.serve_websocket
    )  # 404 there
    assert bridge.dispatch({"PATH_INFO": "/_wsbridge/test-poll/x"}) is poll
    assert bridge.dispatch({"PATH_INFO": "/ws/"}) is site
    passing = wrap(site, router=router, pass_unrouted=True)
    assert passing.dispatch({**upgrade, "PATH_INFO": "/other/"}) is site


def test_endpoint_providers_and_http_dispatcher_are_passed_not_named():
    from wsbridge.transport.wsgi import (
        Endpoint,
        builtin_endpoint_providers,
        builtin_http_dispatcher,
    )

    def site(environ, start_response):
        return [b"site"]

    def hello(environ, start_response):
        return [b"hello"]

    def held(environ, start_response):
        return [b"held"]

    # The defaults: long-poll's and the browser client's endpoints, the HTTP consumers.
    default = wrap(site, router=Router())
    prefixes = [endpoint.prefix for endpoint in default.endpoints]
    assert "/_wsbridge/lp/" in prefixes and "/_wsbridge/wsbridge.js" in prefixes
    assert len(builtin_endpoint_providers()) == 2 and callable(builtin_http_dispatcher())
    # Given explicitly, they replace the defaults.
    bridge = WSBridgeApp(
        site,
        router=Router(),
        endpoint_providers=[lambda app: [Endpoint(app.prefix + "hello", hello, exact=True)]],
        http_dispatcher=lambda app: (
            lambda environ: held if environ["PATH_INFO"] == "/held/" else None
        ),
    )
    assert [endpoint.prefix for endpoint in bridge.endpoints] == ["/_wsbridge/hello"]
    assert bridge.dispatch({"PATH_INFO": "/_wsbridge/hello"}) is hello
    assert bridge.dispatch({"PATH_INFO": "/_wsbridge/lp/open"}) is site
    assert bridge.dispatch({"PATH_INFO": "/held/"}) is held
    assert bridge.dispatch({"PATH_INFO": "/other/"}) is site


def test_header_names_are_remembered_up_to_a_bound_as_clients_choose_them():
    from wsbridge.transport import scope

    assert scope.header_name("HTTP_SEC_WEBSOCKET_KEY") == (
        b"sec-websocket-key",
        "Sec-Websocket-Key",
    )
    for i in range(2 * scope._MAX_NAMES):
        assert scope.header_name(f"HTTP_X_RANDOM_{i}") == (
            f"x-random-{i}".encode(),
            f"X-Random-{i}",
        )
    assert len(scope._NAMES) <= scope._MAX_NAMES


def test_without_an_access_log_no_request_line_is_formatted():
    from types import SimpleNamespace

    from gevent import pywsgi

    from wsbridge.transport.servers.pywsgi import handler_class

    handler = handler_class().__new__(handler_class())
    formatted: list[str] = []
    handler.format_request = lambda: formatted.append("line") or "line"
    handler.server = SimpleNamespace(log=pywsgi._NoopLog())
    handler.log_request()
    assert formatted == []
    lines: list[str] = []
    handler.server = SimpleNamespace(log=SimpleNamespace(write=lines.append))
    handler.log_request()
    assert formatted == ["line"] and lines == ["line\n"]
