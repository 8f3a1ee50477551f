"""Path syntax (wsbridge.consumers.paths): what a path() pattern compiles to."""

from __future__ import annotations

import uuid

import pytest

from wsbridge.consumers.paths import CONVERTERS, compile_path, register_converter
from wsbridge.exceptions import RoutingError


def test_a_pattern_compiles_to_an_anchored_regex_with_one_converter_per_parameter():
    regex, converters = compile_path("ws/<str:room>/<int:n>/", end=True)
    found = regex.match("ws/lobby/7/")
    assert found is not None and found.groupdict() == {"room": "lobby", "n": "7"}
    assert converters["n"].to_python("7") == 7
    assert regex.match("ws/lobby/7/more") is None


def test_a_prefix_is_not_anchored_at_the_end():
    regex, _ = compile_path("api/", end=False)
    assert regex.match("api/chat/") is not None


def test_uuid_values_convert_to_uuid():
    regex, converters = compile_path("<uuid:id>", end=True)
    value = "12345678-1234-5678-1234-567812345678"
    assert regex.match(value) is not None
    assert converters["id"].to_python(value) == uuid.UUID(value)


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("<int:1x>", "not a valid parameter name"),
        ("<nope:x>", "unknown converter"),
        ("<x>/<x>", "appears twice"),
        ("a/<x", "unbalanced"),
    ],
)
def test_bad_patterns_are_refused_with_the_reason(pattern, says):
    with pytest.raises(RoutingError, match=says):
        compile_path(pattern, end=True)


def test_a_registered_converter_is_usable_in_patterns():
    register_converter("year4", r"[0-9]{4}", int)
    try:
        regex, converters = compile_path("<year4:y>/", end=True)
        assert regex.match("2026/") is not None and regex.match("26/") is None
        assert converters["y"].to_python("2026") == 2026
    finally:
        del CONVERTERS["year4"]
