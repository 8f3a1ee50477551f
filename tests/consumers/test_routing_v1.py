"""Channels 1.x routing as 1.x accepted it: dotted strings, dicts, module.attr, route filters."""

from __future__ import annotations

import logging

import pytest

from tests.consumers import v1_routing
from wsbridge import include, route, route_class
from wsbridge.consumers.loading import import_target, load_routes
from wsbridge.consumers.message import Message
from wsbridge.consumers.routing import ContentFilter, Router
from wsbridge.exceptions import RoutingError
from wsbridge.testing import Communicator


def test_import_target_takes_module_dot_attr_and_module_colon_attr():
    assert import_target("tests.consumers.v1_routing.ws_connect") is v1_routing.ws_connect
    assert import_target("tests.consumers.v1_routing:ws_connect") is v1_routing.ws_connect
    with pytest.raises(RoutingError, match="has no 'nope'"):
        import_target("tests.consumers.v1_routing.nope")
    with pytest.raises(RoutingError, match="no module named 'tests.consumers.absent'"):
        import_target("tests.consumers.absent.thing")


def test_a_channel_routing_dict_of_dotted_paths_serves_sockets(layer):
    routes = load_routes("tests.consumers.v1_routing.channel_routing")
    with Communicator(routes, "/anywhere/") as comm:
        assert comm.connect()[0]
        comm.send_to(text_data="hi")
        assert comm.receive_from() == "v1:hi"


def test_include_and_route_class_take_dotted_strings_under_a_path(layer):
    routes = Router(routes=[include("tests.consumers.v1_routing.prefixed")])
    with Communicator(routes, "/v1/") as comm:
        assert comm.connect()[0]
        comm.send_to(text_data="a")
        assert comm.receive_from() == "v1:a"
    with Communicator(routes, "/class/") as comm:
        assert comm.connect()[0]
        comm.send_to(text_data="b")
        assert comm.receive_from() == "class:b"
    # the same module by "module:attr"
    assert load_routes("tests.consumers.v1_routing:prefixed").resolve("websocket", "/class/")


def test_route_filters_choose_the_consumer_of_a_background_channel(caplog):
    v1_routing.seen.clear()
    routes = load_routes("tests.consumers.v1_routing.filtered_routing")
    consumer = routes.channel_consumer("chat.receive")
    assert isinstance(consumer, ContentFilter)
    consumer(Message({"command": "join", "room": "lobby"}, "chat.receive", None))
    consumer(Message({"command": "leave", "room": "lobby"}, "chat.receive", None))
    with caplog.at_level(logging.WARNING, logger="wsbridge.consumers"):
        consumer(Message({"command": "dance"}, "chat.receive", None))
        consumer(Message({"command": "dance"}, "chat.receive", None))
    # named groups of a filter become keyword arguments, as in 1.x
    assert v1_routing.seen == [("join", "lobby", "lobby"), ("leave", "lobby", None)]
    lines = [r.getMessage() for r in caplog.records if "no route filter matched" in r.getMessage()]
    assert len(lines) == 1 and "'chat.receive'" in lines[0]


def test_filters_cannot_mix_with_an_unfiltered_consumer_or_socket_events():
    with pytest.raises(RoutingError, match="already has an unfiltered consumer"):
        Router(routes=[route("jobs", v1_routing.leave), route("jobs", v1_routing.join, kind="^a$")])
    with pytest.raises(RoutingError, match="socket events are routed by path"):
        route("websocket.receive", v1_routing.ws_receive, command="^x$")
    with pytest.raises(RoutingError, match="has no 'Missing'"):
        route_class("tests.consumers.v1_routing_classes.Missing", path=r"^/x/$")


def test_connect_that_neither_accepts_nor_refuses_logs_one_info_line(router, layer, caplog):
    @router.on("websocket.connect", path=r"^/quiet/$")
    def quiet(message):
        pass

    with caplog.at_level(logging.INFO, logger="wsbridge.consumers"):
        for _ in range(3):
            comm = Communicator(router, "/quiet/")
            assert comm.connect() == (False, 1000)
            comm.wait()
    lines = [r for r in caplog.records if "with 403" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    text = lines[0].getMessage()
    assert "/quiet/" in text and "quiet" in text and "self.accept()" in text
