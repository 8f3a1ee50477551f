"""CloseCode is the one source of close codes: the docs' tables and wsbridge.js agree with it.

When a check here fails after a change to the enum, print the table with
``python tests/protocol/test_closecodes.py`` and paste it into the pages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wsbridge.protocol import envelope
from wsbridge.protocol.closecodes import (
    APP_FINAL,
    APP_TRANSIENT,
    ClientAction,
    CloseCode,
    describe,
    should_reconnect,
)

ROOT = Path(__file__).resolve().parents[2]
#: The pages that show every close code, as the same generated table.
TABLE_PAGES = ("docs/topics/protocol.rst", "docs/topics/browser-client.rst")


def render_table() -> str:
    """The close-code table of the docs, from the enum (ranges last)."""
    rows = [(str(int(c)), f"``{c.name}``", c.meaning, c.action.value) for c in CloseCode]
    rows.append(("4000-4499", "", "application code, final", ClientAction.GIVE_UP.value))
    rows.append(("4500-4999", "", "application code, transient", ClientAction.RECONNECT.value))
    head = ("code", "name", "meaning", "client")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([rule, line(head), rule, *map(line, rows), rule])


@pytest.mark.parametrize("page", TABLE_PAGES)
def test_the_close_code_table_of_the_page_is_the_enums(page):
    text = (ROOT / page).read_text()
    assert render_table() in text, (
        f"{page}: the close-code table differs from CloseCode; "
        "regenerate it with python tests/protocol/test_closecodes.py"
    )


def test_the_identity_page_names_its_codes_as_the_enum_does():
    text = (ROOT / "docs/topics/identity.rst").read_text()
    found = dict(re.findall(r"^(4\d{3})\s+``([A-Z_]+)``", text, re.M))
    assert found and {int(code): name for code, name in found.items()} == {
        int(c): c.name for c in CloseCode if c in (4403, 4409, 4429, 4511)
    }


def test_every_code_the_websocket_page_lists_is_a_member():
    text = (ROOT / "docs/topics/websocket.rst").read_text()
    table = text.split("Close codes\n-----------", 1)[1].split("\n\n\n", 1)[0]
    codes = {int(code) for code in re.findall(r"^(\d{4}) ", table, re.M)}
    assert codes and codes <= set(CloseCode)


def test_wsbridge_js_gives_up_after_exactly_the_enums_final_codes():
    source = (ROOT / "wsbridge/static/wsbridge/wsbridge.js").read_text()
    body = source.split("function defaultShouldReconnect(code) {", 1)[1].split("}", 1)[0]
    named = {int(code) for code in re.findall(r"code === (\d{4})", body)}
    low, high = map(int, re.search(r"code >= (\d{4}) && code <= (\d{4})", body).groups())
    assert range(low, high + 1) == APP_FINAL
    give_up = {c for c in CloseCode if c.action is ClientAction.GIVE_UP}
    assert named == {c for c in give_up if c not in APP_FINAL}


@pytest.mark.parametrize("code", [*CloseCode, 3000, 4000, 4001, 4499, 4500, 4999])
def test_should_reconnect_follows_the_action(code):
    assert should_reconnect(code) is (describe(code).action is not ClientAction.GIVE_UP)
    assert envelope.should_reconnect(code) is should_reconnect(code)
    if code not in set(CloseCode):
        assert should_reconnect(code) is (code not in APP_FINAL)


def test_the_4xxx_codes_sit_in_the_range_their_action_says():
    for code in CloseCode:
        if code >= 4000:
            final = code.action is ClientAction.GIVE_UP
            assert code in (APP_FINAL if final else APP_TRANSIENT), code


def test_members_print_as_numbers_and_the_old_names_are_aliases():
    assert f"{CloseCode.TRY_AGAIN_LATER}" == "1013" and str(CloseCode.REVOKED) == "4403"
    assert envelope.CLOSE_POLICY is CloseCode.POLICY_VIOLATION
    assert envelope.CLOSE_TRY_AGAIN_LATER == 1013 and envelope.APP_CODES_FINAL == APP_FINAL
    assert not CloseCode.ABNORMAL.info.on_wire
    assert all(c.info.on_wire for c in CloseCode if c is not CloseCode.ABNORMAL)


if __name__ == "__main__":
    print(render_table())
