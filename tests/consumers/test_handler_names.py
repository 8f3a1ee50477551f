"""get_handler_name's memo (the group path looks the name up once per delivery)."""

from __future__ import annotations

import pytest

from wsbridge.consumers import consumer as consumer_module
from wsbridge.consumers.consumer import get_handler_name
from wsbridge.exceptions import UnknownMessageType


def test_names_are_the_same_cached_or_not_and_private_ones_stay_refused():
    for _ in range(2):  # the second round answers from the memo
        assert get_handler_name({"type": "chat.message"}) == "chat_message"
        with pytest.raises(UnknownMessageType):
            get_handler_name({"type": "_secret.thing"})
        for bad in (None, "", ["chat.message"], 3):
            with pytest.raises(UnknownMessageType):
                get_handler_name({"type": bad})
    assert "_secret.thing" not in consumer_module._HANDLER_NAMES


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(consumer_module, "_HANDLER_NAMES", {})
    monkeypatch.setattr(consumer_module, "_HANDLER_NAMES_MAX", 3)
    for i in range(10):
        assert get_handler_name({"type": f"kind.n{i}"}) == f"kind_n{i}"
    assert len(consumer_module._HANDLER_NAMES) == 3
