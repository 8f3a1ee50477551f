"""The one Origin matcher (wsbridge.transport.origin), case by case.

Each row is what the matcher answers now. Three matchers came before it (the
WebSocket one in transport/wsgi.py, ``W``; long-poll's own, ``L``; Django's
in wsbridge_django/origins.py, ``D``). Where one of them answered otherwise,
the comment says so: every such case is outside what the docs promised, and
each goes the way of the wider of the old rules that is still safe.
"""

from __future__ import annotations

import pytest

from wsbridge.transport.origin import (
    OriginPattern,
    Origins,
    environ_checker,
    origin_allowed,
    same_host,
)
from wsbridge.transport.wsgi import check_origin

# (origin, request Host, scheme) under the same-host rule: W with allowed=None, L always.
SAME_HOST = [
    (None, "a.test", "http", True),  # no Origin: not a browser
    ("http://a.test", "a.test", "http", True),
    ("http://a.test:80", "a.test", "http", True),
    ("http://A.TEST", "a.test", "http", True),
    ("http://a.test", "A.Test", "http", True),
    ("http://a.test:8000", "a.test:8000", "http", True),
    ("http://a.test", "a.test:80", "http", True),
    ("https://a.test", "a.test", "http", True),  # TLS ended at a proxy: schemes not compared
    ("https://a.test:443", "a.test", "http", True),
    ("https://a.test", "a.test:443", "https", True),
    ("http://[::1]:8000", "[::1]:8000", "http", True),
    ("http://evil.test", "a.test", "http", False),
    ("http://a.test:8001", "a.test:8000", "http", False),
    ("http://a.test.evil.test", "a.test", "http", False),
    ("null", "a.test", "http", False),
    ("", "a.test", "http", False),  # L allowed an empty Origin (as if absent)
    ("http://[::1", "a.test", "http", False),  # malformed
    ("http://a.test", None, "http", False),  # no Host to compare with
]


@pytest.mark.parametrize("origin, host, scheme, ok", SAME_HOST)
def test_same_host_rule(origin, host, scheme, ok):
    assert check_origin(origin, host, None, scheme=scheme) is ok
    assert origin_allowed(origin, None, host=host, scheme=scheme) is ok


# (origin, patterns, allowed?) -- the patterns alone, no same-host rule.
PATTERNS = [
    # "*": every origin.
    ("http://other.test", ["*"], True),
    ("null", ["*"], True),  # W refused "null" under "*"; D allowed it
    ("http://[::1", ["*"], True),  # W refused a malformed Origin under "*"; D allowed it
    ("chrome-extension://abcdef", ["*"], True),
    # "null": the opaque origin only.
    ("null", ["null"], True),  # D refused "null" whatever the list
    ("NULL", ["null"], True),
    ("file://", ["null"], True),  # no host: opaque, as W had it
    ("", ["null"], True),
    ("http://a.test", ["null"], False),
    ("null", ["a.test"], False),
    ("null", [], False),
    # full origins, with * as a wildcard in a part (W: fnmatch on the origin; L: suffix).
    ("https://app.example.com", ["https://*.example.com"], True),
    ("https://a.b.example.com", ["https://*.example.com"], True),
    ("HTTPS://App.Example.COM", ["https://*.example.com"], True),
    ("http://app.example.com", ["https://*.example.com"], False),
    ("https://example.com", ["https://*.example.com"], False),
    ("https://app.example.com:8443", ["https://*.example.com"], False),
    ("https://app.example.com:443", ["https://*.example.com"], True),  # W refused: not as sent
    ("https://app.example.com.evil.test", ["https://*.example.com"], False),
    ("https://evilexample.com", ["https://*.example.com"], False),
    ("https://app.example.com", ["https://app.example.com"], True),
    ("https://APP.example.com", ["https://app.example.com"], True),  # L compared exactly
    ("https://app.example.com", ["  HTTPS://app.example.com  "], True),
    ("https://app.example.com", ["https://app.example.com/"], True),  # D read the URL; W: no
    ("https://app.example.com:443", ["https://app.example.com"], True),  # W, D: no
    ("http://app.example.com", ["https://app.example.com"], False),
    ("https://app.example.com:8443", ["https://app.example.com"], False),
    ("https://app.example.com:8443", ["https://app.example.com:8443"], True),
    ("https://app.example.com", ["https://app.example.com:8443"], False),
    ("https://partner.example.org", ["https://partner.example.org"], True),
    ("http://testserver", ["https://partner.example.org"], False),
    ("http://friend.test", ["http://friend.test", "http://127.0.0.1:*"], True),
    ("http://127.0.0.1:5000", ["http://friend.test", "http://127.0.0.1:*"], True),
    ("http://evil.test", ["http://friend.test", "http://127.0.0.1:*"], False),
    ("http://localhost:3000", ["http://localhost:*"], True),
    ("http://localhost", ["http://localhost:*"], True),  # W: no (no ":" to match)
    ("https://localhost:3000", ["http://localhost:*"], False),
    ("http://localhost.evil.test:3000", ["http://localhost:*"], False),
    ("chrome-extension://abcdef", ["chrome-extension://abcdef"], True),
    ("http://app.example.com", ["*://app.example.com"], True),
    # host patterns: any web scheme, any port unless given (ALLOWED_HOSTS' rules, D).
    ("http://app.example.com", ["*.example.com"], True),
    ("https://app.example.com", ["*.example.com"], True),
    ("ws://app.example.com:8080", ["*.example.com"], True),  # W: only without a port
    ("http://example.com", ["*.example.com"], False),
    ("http://localhost:3000", ["localhost:*"], True),
    ("http://localhost", ["localhost:*"], True),  # W: no
    ("http://localhost:3000", ["localhost:3000"], True),
    ("http://localhost:3001", ["localhost:3000"], False),
    ("http://example.com:80", ["example.com:80"], True),  # W: no (it dropped the :80)
    ("http://example.com", ["example.com"], True),
    ("https://example.com", ["example.com"], True),
    ("http://EXAMPLE.com", ["Example.COM"], True),
    ("http://example.com:8000", ["example.com"], True),  # D allowed (ALLOWED_HOSTS); W: no
    ("http://sub.example.com", ["example.com"], False),
    ("http://notexample.com", ["example.com"], False),
    ("http://example.com", [".example.com"], True),  # W: no (fnmatch had no "." rule)
    ("https://a.b.example.com:8443", [".example.com"], True),
    ("http://badexample.com", [".example.com"], False),
    ("http://app.example.test", [".example.test", "testserver", "127.0.0.1"], True),
    ("http://testserver", [".example.test", "testserver", "127.0.0.1"], True),
    ("http://127.0.0.1:8000", [".example.test", "testserver", "127.0.0.1"], True),
    ("http://localhost:8000", [".localhost", "127.0.0.1", "[::1]"], True),
    ("http://app.localhost", [".localhost", "127.0.0.1", "[::1]"], True),
    ("http://[::1]:8000", [".localhost", "127.0.0.1", "[::1]"], True),
    ("http://[::2]", ["[::1]"], False),
    ("http://[::1]:8000", ["[::1]:8000"], True),
    ("http://[::1]", ["::1"], True),  # a bare IPv6 literal is read as a host
    ("http://a.test:8000", ["*:8000"], True),
    ("https://evil.test", ["example.com", "https://app.example.com"], False),
    # host patterns name web pages only (D); W matched any scheme's host.
    ("chrome-extension://example.com", ["example.com"], False),
    ("ftp://example.com", ["*.com"], False),
    # only * is a wildcard (W's fnmatch also read ? and [...]: undocumented).
    ("http://ab.test", ["a?.test"], False),
    ("http://a.test", ["[ab].test"], False),
    # malformed origins: refused whatever the list (but "*").
    ("http://[::1", ["[::1]"], False),
    ("http://example.com:abc", ["example.com"], False),
    ("http://user@example.com", ["example.com"], False),  # D read the host; browsers never send it
    ("http://", ["null"], True),  # no host at all: opaque
    # no Origin: not a browser, always allowed.
    (None, [], True),
    (None, ["https://app.example.com"], True),
]


@pytest.mark.parametrize("origin, patterns, ok", PATTERNS)
def test_patterns(origin, patterns, ok):
    assert origin_allowed(origin, patterns) is ok
    assert check_origin(origin, "unrelated.test", patterns) is ok  # a list replaces same-host


def test_django_matcher_is_this_one():
    from wsbridge_django.origins import origin_allowed as django_allowed

    for origin, patterns, ok in PATTERNS:
        assert django_allowed(origin, patterns) is ok, (origin, patterns)


def test_same_host_and_patterns_together():
    origins = Origins(["http://friend.test"])
    assert origins.allows("http://a.test:8000", host="a.test:8000")
    assert origins.allows("http://friend.test", host="a.test:8000")
    assert not origins.allows("http://evil.test", host="a.test:8000")
    assert not origins.allows("http://a.test:8000")


@pytest.mark.parametrize(
    "allowed, environ, ok",
    [
        (None, {"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://a.test"}, True),
        (None, {"HTTP_HOST": "a.test:443", "HTTP_ORIGIN": "https://a.test"}, False),
        (
            None,
            {
                "HTTP_HOST": "a.test:443",
                "HTTP_ORIGIN": "https://a.test",
                "wsgi.url_scheme": "https",
            },
            True,
        ),
        (None, {"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://b.test"}, False),
        (None, {"HTTP_ORIGIN": "http://a.test"}, False),
        (None, {"HTTP_HOST": "a.test"}, True),
        (["http://b.test"], {"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://b.test"}, True),
        (["http://b.test"], {"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://a.test"}, False),
    ],
)
def test_environ_checker(allowed, environ, ok):
    assert environ_checker(allowed)(environ) is ok


def test_environ_checker_can_keep_the_same_host_beside_a_list():
    check = environ_checker(["http://b.test"], same_host=True)
    assert check({"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://a.test"})
    assert check({"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://b.test"})
    assert not check({"HTTP_HOST": "a.test", "HTTP_ORIGIN": "http://c.test"})


def test_same_host_helper_refuses_what_it_cannot_read():
    assert not same_host("null", "a.test")
    assert not same_host("http://[::1", "a.test")


@pytest.mark.parametrize(
    "text, parts",
    [
        ("https://*.example.com", ("https", "*.example.com", None)),
        ("http://localhost:*", ("http", "localhost", "*")),
        ("localhost:3000", (None, "localhost", "3000")),
        (".example.com", (None, ".example.com", None)),
        ("[::1]:8000", (None, "[::1]", "8000")),
        ("::1", (None, "[::1]", None)),
        (" HTTPS://App.Example.com/path ", ("https", "app.example.com", None)),
    ],
)
def test_pattern_parts(text, parts):
    pattern = OriginPattern.parse(text)
    assert (pattern.scheme, pattern.host, pattern.port) == parts
    assert pattern.text == text
