"""Find the code blocks of a reStructuredText page, with docutils.

The docs harness (``test_docs_run.py``) and the ``::`` guard use this: a page
is parsed by docutils itself, so what counts as a block here is what Sphinx
renders as one. Sphinx's own directives and roles are not known to plain
docutils; the few that matter are registered below:

* ``code-block`` / ``sourcecode`` keep their language, ``:caption:``,
  ``:class:`` and the line of the directive;
* directives whose body is ordinary reStructuredText (``versionadded``,
  ``seealso``, ``only``...) are parsed through, so blocks inside them count;
* the rest (``toctree``, ``auto*``...) produce nothing.

A directive this module does not know is reported as an error naming the page
and line, so no block can hide inside one: add it to the right set below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import docutils.frontend
import docutils.nodes
import docutils.utils
from docutils.parsers.rst import Directive, Parser, directives, roles

#: Sphinx directives whose content is reStructuredText: parsed through.
NESTED = (
    "versionadded",
    "versionchanged",
    "deprecated",
    "seealso",
    "only",
    "hlist",
    "glossary",
    "centered",
    "rubric",
    "tabs",
    "tab",
)
#: Sphinx directives that hold no code block: ignored.
IGNORED = (
    "toctree",
    "automodule",
    "autoclass",
    "autofunction",
    "automethod",
    "autoattribute",
    "autodata",
    "autoexception",
    "currentmodule",
    "module",
    "highlight",
    "literalinclude",
    "index",
    "tabularcolumns",
    "py:function",
    "py:class",
    "py:method",
    "py:attribute",
    "py:data",
    "py:module",
    "envvar",
    "option",
    "program",
    "describe",
    "function",
    "class",
    "method",
    "data",
    "attribute",
    "exception",
)
#: Sphinx roles; rendered as literal text, their target is Sphinx's business.
ROLES = (
    "ref",
    "doc",
    "class",
    "func",
    "meth",
    "mod",
    "attr",
    "data",
    "exc",
    "obj",
    "envvar",
    "option",
    "term",
    "file",
    "program",
    "command",
    "samp",
    "kbd",
    "download",
    "any",
    "numref",
    "keyword",
    "const",
    "py:class",
    "py:func",
    "py:meth",
    "py:mod",
    "py:attr",
    "py:data",
    "py:exc",
    "py:obj",
    "rfc",
    "pep",
)


@dataclass(frozen=True)
class Block:
    """One literal block of a page: what it holds and how the harness treats it."""

    page: Path
    line: int  # 1-based line of the block's first line of code in the page
    language: str | None  # None for a bare ``::`` block
    code: str
    caption: str | None = None
    classes: tuple[str, ...] = field(default=())

    @property
    def where(self) -> str:
        """``docs/page.rst:LINE``, for failure messages."""
        return f"{self.page}:{self.line}"


class CodeBlock(Directive):
    """Sphinx's ``code-block``, reduced to what the harness needs."""

    has_content = True
    optional_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {
        "caption": directives.unchanged_required,
        "class": directives.class_option,
        "name": directives.unchanged,
        "linenos": directives.flag,
        "lineno-start": directives.nonnegative_int,
        "emphasize-lines": directives.unchanged,
        "dedent": directives.unchanged,
        "force": directives.flag,
    }

    def run(self) -> list[docutils.nodes.Node]:
        node = docutils.nodes.literal_block("\n".join(self.content), "\n".join(self.content))
        node["language"] = self.arguments[0] if self.arguments else "default"
        node["caption"] = self.options.get("caption")
        node["classes"] += self.options.get("class", [])
        node["directive_line"] = self.lineno
        return [node]


class Nested(Directive):
    """A Sphinx directive whose body is reStructuredText: parse the body."""

    has_content = True
    optional_arguments = 1
    final_argument_whitespace = True
    option_spec: ClassVar[dict[str, Any]] = {}

    def run(self) -> list[docutils.nodes.Node]:
        node = docutils.nodes.container()
        self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


class Ignored(Directive):
    """A Sphinx directive that holds no code: produce nothing."""

    has_content = True
    optional_arguments = 10
    final_argument_whitespace = True

    class _AnyOptions(dict):  # every option accepted, unchecked
        def __missing__(self, key: str) -> Any:
            return directives.unchanged

        def __contains__(self, key: object) -> bool:
            return True

    option_spec = _AnyOptions()

    def run(self) -> list[docutils.nodes.Node]:
        return []


def _literal_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Any,
    options: dict[str, Any] | None = None,
    content: list[str] | None = None,
) -> tuple[list[Any], list[Any]]:
    return [docutils.nodes.literal(rawtext, text)], []


def _register() -> None:
    for name in ("code-block", "sourcecode"):
        directives.register_directive(name, CodeBlock)
    for name in NESTED:
        directives.register_directive(name, Nested)
    for name in IGNORED:
        directives.register_directive(name, Ignored)
    for name in ROLES:
        roles.register_canonical_role(name, _literal_role)


_register()

_UNKNOWN = re.compile(r'Unknown (?:directive|interpreted text role) type "([^"]+)"')


class UnknownMarkup(Exception):
    """The page uses a directive or role the harness cannot see into."""


def parse(page: Path, text: str | None = None) -> list[Block]:
    """Every literal block of ``page``, in page order.

    Raises:
        UnknownMarkup: the page uses a directive this module does not know;
            add its name to ``NESTED`` or ``IGNORED``.
    """
    source = page.read_text(encoding="utf-8") if text is None else text
    settings = docutils.frontend.get_default_settings(Parser)
    settings.report_level = 5  # quiet: Sphinx reports markup problems, not us
    settings.halt_level = 5
    settings.file_insertion_enabled = False
    settings.raw_enabled = False
    document = docutils.utils.new_document(str(page), settings)
    unknown: list[str] = []

    def observe(msg: docutils.nodes.system_message) -> None:
        match = _UNKNOWN.search(msg.astext())
        if match:
            unknown.append(f"{page}:{msg.get('line', '?')}: {match.group(0)}")

    document.reporter.attach_observer(observe)
    Parser().parse(source, document)
    if unknown:
        raise UnknownMarkup("; ".join(unknown) + " (register it in tests/docs/rstblocks.py)")
    lines = source.splitlines()
    blocks: list[Block] = []
    after = 0
    for node in document.findall(docutils.nodes.literal_block):
        block = _block(page, node, lines, after)
        after = block.line
        blocks.append(block)
    return blocks


def _block(page: Path, node: docutils.nodes.literal_block, lines: list[str], after: int) -> Block:
    """Build a Block, locating its first code line in the page.

    docutils does not keep a reliable line for block contents, so the first
    line of code is looked up in the source, after the directive (or the
    previous block): tracebacks then point at real lines of the page.
    """
    code = node.astext()
    start = max(after, node.get("directive_line", 0))
    first = next((ln.strip() for ln in code.splitlines() if ln.strip()), "")
    line = start + 1
    for index in range(start, len(lines)):
        if first and lines[index].strip() == first:
            line = index + 1
            break
    # the code may start with blank lines that docutils kept: count them back
    leading = len(code) - len(code.lstrip("\n"))
    line -= code[:leading].count("\n")
    language = node.get("language") if "directive_line" in node else None
    return Block(
        page=page,
        line=line,
        language=language,
        code=code,
        caption=node.get("caption"),
        classes=tuple(node["classes"]),
    )
