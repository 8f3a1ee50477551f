"""The state table in docs/topics/protocol.rst is the one in wsbridge.protocol.longpoll."""

from __future__ import annotations

import re
from pathlib import Path

from wsbridge.protocol.longpoll import transition_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "topics" / "protocol.rst"


def test_the_documented_state_table_matches_the_code():
    text = DOC.read_text()
    section = text.split("Session states", 1)[1].split("A minimal client", 1)[0]
    rows = re.findall(r"^(\w+)\s{2,}(\w+)\s{2,}(\w+)\s*$", section, re.M)
    documented = [row for row in rows if row != ("state", "event", "next")]
    assert sorted(documented) == sorted(transition_rows())
