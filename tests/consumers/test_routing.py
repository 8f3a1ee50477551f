"""Routing: path() converters, re_path, include(), lists, nesting, decorators, settings."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from wsbridge import JsonWebsocketConsumer, WebsocketConsumer
from wsbridge.consumers.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    Router,
    URLRouter,
    autodiscover,
    build_router,
    include,
    load_routes,
    path,
    re_path,
    register_converter,
    route,
    route_class,
)
from wsbridge.exceptions import RoutingError
from wsbridge.testing import Communicator


class Room(WebsocketConsumer):
    pass


class Feed(JsonWebsocketConsumer):
    pass


class Other(WebsocketConsumer):
    pass


def kwargs_of(r: Router, p: str) -> dict:
    match = r.resolve("websocket", p)
    assert match is not None, p
    return match.kwargs


# -- path() converters ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "request_path", "expected"),
    [
        ("ws/chat/<str:room>/", "/ws/chat/lobby/", {"room": "lobby"}),
        ("ws/chat/<room>/", "/ws/chat/a b/", {"room": "a b"}),
        ("ws/item/<int:pk>/", "/ws/item/42/", {"pk": 42}),
        ("ws/s/<slug:s>/", "/ws/s/my-slug_1/", {"s": "my-slug_1"}),
        ("ws/f/<path:rest>", "/ws/f/a/b/c.txt", {"rest": "a/b/c.txt"}),
        (
            "ws/u/<uuid:id>/",
            "/ws/u/12345678-1234-5678-1234-567812345678/",
            {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
    ],
)
def test_path_converters_put_typed_values_in_kwargs(pattern, request_path, expected):
    r = Router([path(pattern, Room)])
    assert kwargs_of(r, request_path) == expected


@pytest.mark.parametrize(
    ("pattern", "request_path"),
    [
        ("ws/item/<int:pk>/", "/ws/item/x/"),
        ("ws/chat/<str:room>/", "/ws/chat/a/b/"),
        ("ws/chat/<str:room>/", "/ws/chat/lobby/extra"),
        ("ws/s/<slug:s>/", "/ws/s/no spaces/"),
        ("ws/exact/", "/ws/exact/more/"),
    ],
)
def test_path_does_not_match_wrong_shapes(pattern, request_path):
    assert Router([path(pattern, Room)]).resolve("websocket", request_path) is None


def test_registered_converter_is_usable_and_can_reject():
    def year(value: str) -> int:
        if not 1900 <= int(value) <= 2100:
            raise ValueError(value)
        return int(value)

    register_converter("yyyy", r"[0-9]{4}", year)
    r = Router([path("ws/y/<yyyy:year>/", Room)])
    assert kwargs_of(r, "/ws/y/2024/") == {"year": 2024}
    assert r.resolve("websocket", "/ws/y/1200/") is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("ws/<nope:x>/", "unknown converter 'nope'"),
        ("ws/<int:a b>/", "not a valid parameter name"),
        ("ws/<a>/<int:a>/", "appears twice"),
        ("ws/<a/", "unbalanced"),
    ],
)
def test_bad_path_patterns_raise_clear_routing_errors(pattern, message):
    with pytest.raises(RoutingError, match=message):
        path(pattern, Room)


def test_bad_regex_and_bad_target_raise_routing_errors():
    with pytest.raises(RoutingError, match="not a valid regex"):
        re_path(r"ws/(unclosed", Room)
    with pytest.raises(RoutingError, match="neither a consumer"):
        path("ws/", object())


# -- re_path --------------------------------------------------------------------


def test_re_path_named_groups_are_kwargs_and_unnamed_are_args():
    r = Router([re_path(r"ws/feed/(?P<feed>\w+)/$", Feed), re_path(r"ws/n/(\d+)/(\d+)/$", Room)])
    assert kwargs_of(r, "/ws/feed/news/") == {"feed": "news"}
    match = r.resolve("websocket", "/ws/n/1/2/")
    assert match.args == ("1", "2") and match.kwargs == {}
    assert match.url_route == {"args": ("1", "2"), "kwargs": {}}


def test_re_path_with_leading_slash_matches_the_full_path_as_channels_1x():
    r = Router([re_path(r"^/chat/(?P<room>[^/]+)/$", Room)])
    assert kwargs_of(r, "/chat/lobby/") == {"room": "lobby"}


# -- nesting: include(), URLRouter lists, decorators ------------------------------


def test_include_nests_under_a_prefix_and_merges_kwargs():
    inner = [path("room/<str:room>/", Room), re_path(r"feed/(?P<feed>\w+)/$", Feed)]
    r = URLRouter([path("ws/<str:site>/", include(inner)), path("other/", Other)])
    assert kwargs_of(r, "/ws/main/room/lobby/") == {"site": "main", "room": "lobby"}
    match = r.resolve("websocket", "/ws/main/feed/x/")
    assert match.consumer is Feed and match.kwargs == {"site": "main", "feed": "x"}
    assert r.resolve("websocket", "/other/").consumer is Other
    assert r.resolve("websocket", "/ws/main/nothing/") is None


def test_include_of_a_module_path(tmp_path, monkeypatch):
    pkg = _write_module(
        tmp_path,
        monkeypatch,
        "routing",
        """
        from tests.consumers.test_routing import Room
        from wsbridge.consumers.routing import path
        websocket_urlpatterns = [path("r/<room>/", Room)]
    """,
    )
    r = Router([path("ws/", include(pkg))])
    assert kwargs_of(r, "/ws/r/x/") == {"room": "x"}
    assert load_routes(pkg + ":websocket_urlpatterns").resolve("websocket", "r/y/")


def test_router_decorators_register_and_return_the_class_unchanged(router):
    @router.websocket("ws/chat/<str:room>/")
    class Chat(WebsocketConsumer):
        pass

    assert isinstance(Chat, type) and issubclass(Chat, WebsocketConsumer)
    assert router.resolve("websocket", "/ws/chat/x/").consumer is Chat
    sub = Router()
    sub.websocket("deep/<int:n>/", Other)
    router.include("api/", sub)
    assert kwargs_of(router, "/api/deep/3/") == {"n": 3}


def test_decorating_something_that_is_not_a_consumer_is_a_routing_error(router):
    with pytest.raises(RoutingError, match="needs a WebsocketConsumer subclass"):
        router.websocket("ws/")(lambda message: None)


def test_two_consumers_on_one_pattern_is_an_error_but_reimport_replaces(router):
    router.websocket("ws/a/", Room)
    with pytest.raises(RoutingError, match="already routed to .*Room"):
        router.websocket("ws/a/", Other)
    # The same class defined again (a module imported twice) replaces quietly.
    again = type(
        "Room",
        (WebsocketConsumer,),
        {"__module__": Room.__module__, "__qualname__": Room.__qualname__},
    )
    router.websocket("ws/a/", again)
    assert router.resolve("websocket", "/ws/a/").consumer is again


def test_a_router_cannot_include_itself(router):
    sub = Router()
    router.merge(sub)
    with pytest.raises(RoutingError, match="cannot include itself"):
        sub.merge(router)


def test_first_matching_route_wins_and_catch_all_function_consumers_go_last(router):
    @router.on("websocket.connect")
    def anything(message):
        message.reply_channel.send({"accept": True})

    router.websocket("ws/exact/", Room)
    assert router.resolve("websocket", "/ws/exact/").consumer is Room
    assert router.resolve("websocket", "/whatever/").consumer.handlers == {
        "websocket.connect": anything
    }


def test_resolve_only_returns_consumers_of_the_asked_scope_type(router):
    router.websocket("ws/", Room)
    assert router.resolve("http", "/ws/") is None


# -- Channels 1.x routing lists ------------------------------------------------------


def test_channels_1x_route_route_class_and_include_with_path():
    def ws_connect(message):
        message.reply_channel.send({"accept": True})

    def thumbnails(message):
        pass

    chat_routing = [
        route("websocket.connect", ws_connect, path=r"^/(?P<room>[^/]+)/$"),
    ]
    channel_routing = [
        route_class(Room, path=r"^/rooms/$"),
        include(chat_routing, path=r"^/chat"),
        route("thumbnails.make", thumbnails),
    ]
    r = Router(channel_routing)
    assert r.resolve("websocket", "/rooms/").consumer is Room
    match = r.resolve("websocket", "/chat/lobby/")
    assert match.consumer.handlers["websocket.connect"] is ws_connect
    assert match.kwargs == {"room": "lobby"}
    assert r.channel_consumer("thumbnails.make") is thumbnails


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (lambda: route("http.request", print), "plain HTTP stays with the WSGI app"),
        (lambda: route("websocket.receive", print, method="GET"), "unsupported filters"),
        (lambda: route("work", print, path="^/x$"), "a background channel has no path"),
        (lambda: "not a route", "not 'not a route'"),
    ],
)
def test_bad_channels_1x_entries_are_clear_errors(entry, message):
    with pytest.raises(RoutingError, match=message):
        Router([entry()])


# -- background channels ---------------------------------------------------------------


def test_channel_decorator_registers_and_nested_routers_are_searched(router):
    @router.channel("thumbnails.generate")
    def make(message):
        pass

    outer = Router()
    outer.merge(router)
    assert outer.channel_consumer("thumbnails.generate") is make
    assert outer.channel_names() == ["thumbnails.generate"]
    assert outer.channel_consumer("nothing") is None


@pytest.mark.parametrize(
    ("name", "message"),
    [("bad name", "invalid"), ("specific.x!y", "process-specific"), ("", "1 to 99")],
)
def test_invalid_background_channel_names_are_refused(router, name, message):
    with pytest.raises(RoutingError, match=message):
        router.channel(name)


def test_a_channel_with_two_different_consumers_is_refused(router):
    router.channel("work")(lambda m: None)
    with pytest.raises(RoutingError, match="already has a consumer"):
        router.channel("work")(print)
    other = Router()
    other.channel("work")(print)
    with pytest.raises(RoutingError, match="cannot merge: channel 'work'"):
        router.merge(other)


def test_channel_name_router_and_protocol_type_router_channels_4_shapes():
    def gen(message):
        pass

    app = ProtocolTypeRouter(
        {
            "http": object(),  # the site's WSGI app serves HTTP; ignored
            "websocket": URLRouter([path("ws/<room>/", Room)]),
            "channel": ChannelNameRouter({"thumbnails-generate": gen}),
        }
    )
    assert kwargs_of(app, "/ws/x/") == {"room": "x"}
    assert app.channel_consumer("thumbnails-generate") is gen
    with pytest.raises(RoutingError, match="not 'lifespan'"):
        ProtocolTypeRouter({"lifespan": []})


# -- settings: load_routes / autodiscover / build_router ------------------------------------


def _write_module(tmp_path: Path, monkeypatch, name: str, source: str) -> str:
    package = f"routepkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{package}.{name}"


def test_autodiscover_imports_consumer_modules_whose_decorators_register(
    tmp_path, monkeypatch, default_router
):
    module = _write_module(
        tmp_path,
        monkeypatch,
        "consumers",
        """
        from wsbridge import WebsocketConsumer, router
        @router.websocket("autodiscovered/<int:n>/")
        class Found(WebsocketConsumer):
            pass
        @router.channel("autodiscovered.work")
        def work(message):
            pass
    """,
    )
    try:
        result = autodiscover([module])
        assert result is default_router
        assert kwargs_of(default_router, "/autodiscovered/7/") == {"n": 7}
        assert "autodiscovered.work" in default_router.channel_names()
    finally:
        sys.modules.pop(module, None)


def test_autodiscover_names_a_missing_module_but_keeps_errors_inside_modules(tmp_path, monkeypatch):
    with pytest.raises(RoutingError, match="cannot import consumer module 'no_such_mod_xyz'"):
        autodiscover("no_such_mod_xyz")
    broken = _write_module(tmp_path, monkeypatch, "broken", "import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        autodiscover([broken])


def test_build_router_combines_a_declared_routing_with_decorated_consumers(
    tmp_path, monkeypatch, default_router
):
    routing = _write_module(
        tmp_path,
        monkeypatch,
        "routing",
        """
        from tests.consumers.test_routing import Room
        from wsbridge.consumers.routing import path
        routes = [path("declared/", Room)]
    """,
    )
    consumers = routing.replace(".routing", ".consumers")
    (tmp_path / consumers.replace(".", "/")).with_suffix(".py").write_text(
        textwrap.dedent("""
        from tests.consumers.test_routing import Other
        from wsbridge import router
        router.websocket("decorated/", Other)
    """)
    )
    combined = build_router(routing, consumers)
    assert combined.resolve("websocket", "/declared/").consumer.__name__ == "Room"
    assert combined.resolve("websocket", "/decorated/").consumer.__name__ == "Other"
    assert build_router() is default_router


def test_load_routes_errors_name_what_is_missing(tmp_path, monkeypatch):
    empty = _write_module(tmp_path, monkeypatch, "empty", "x = 1\n")
    with pytest.raises(RoutingError, match="defines none of: router, routes"):
        load_routes(empty)
    with pytest.raises(RoutingError, match="is a int, not routes"):
        load_routes(empty + ":x")
    with pytest.raises(RoutingError, match="cannot import routing module"):
        load_routes("nowhere_xyz.routing")


def test_communicator_through_a_router_fills_url_route(router, layer):
    router.websocket("ws/chat/<str:room>/<int:n>/", Room)
    comm = Communicator(router, "/ws/chat/lob%20by/3/?x=1")
    assert comm.scope["url_route"] == {"args": (), "kwargs": {"room": "lob by", "n": 3}}
    assert comm.scope["query_string"] == b"x=1"
    assert comm.connect() == (True, None)
    comm.disconnect()
