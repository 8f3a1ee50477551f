"""Request headers for the pywsgi handler, without the e-mail parser for plain ones.

gevent's pywsgi reads a request's headers with ``http.client.parse_headers``,
which hands them to the standard library's *e-mail* feed parser. That parser
was a fifth of ``wsbridge serve``'s CPU in the long-poll bench (every poll is
a request; bench/README.md). :func:`read_headers` reads the lines with the
same limits (65,536 bytes a line, 100 lines with the blank one) and, when
every line is a plain ``Name: value`` line, builds the same message object
directly: names as sent, values with leading blanks and the line end taken
off, in order, duplicates kept, exactly what the e-mail parser stores.

Any line that is not plain (a folded continuation, a name with a character
a header name may not have, no colon, a bare CR) sends the whole block to
the standard parser instead, so unusual input is read exactly as before:
the fast path only ever sees input both parsers read the same way
(``tests/transport/test_headers.py`` checks that on crafted and random
header blocks).
"""

from __future__ import annotations

import email.parser
import re
from http import client
from typing import Any

__all__ = ["read_headers", "message_class"]

#: The limits of ``http.client`` (its ``_MAXLINE`` and ``_MAXHEADERS``).
MAX_LINE = 65536
MAX_HEADERS = 100

# A header name as the e-mail parser accepts it (printable ASCII but ':' and
# space), then the colon; anything else goes to that parser.
_PLAIN = re.compile(r"[!-9;-~]+:")
_END = (b"\r\n", b"\n", b"")


def message_class() -> Any:
    """gevent's header message class, or None if this gevent has none we know."""
    from gevent import pywsgi

    return getattr(pywsgi, "OldMessage", None)


def read_headers(fp: Any, message: Any) -> Any:
    """The headers of one request from ``fp``, as a ``message`` instance (pywsgi's class).

    Raises:
        http.client.HTTPException: more than 100 header lines (as the
            standard library; pywsgi answers it as it always did).
    """
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            too_long = message()
            too_long.status = "Line too long"  # what pywsgi's own reader reports
            return too_long
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in _END:
            break
    texts = [line.decode("iso-8859-1") for line in lines]
    parsed = message()
    headers = parsed._headers  # the e-mail Message's own list of (name, value)
    for text in texts[:-1]:
        body = text[:-2] if text.endswith("\r\n") else text.rstrip("\n")
        if "\r" in body or _PLAIN.match(body) is None:
            return email.parser.Parser(_class=message).parsestr("".join(texts))
        name, _, value = body.partition(":")
        headers.append((name, value.lstrip(" \t")))
    return parsed
