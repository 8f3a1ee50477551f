"""Sphinx configuration for the wsbridge docs."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "wsbridge"
author = "the wsbridge developers"
copyright = "2026, the wsbridge developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
# A bare "::" block is plain text: python goes in ".. code-block:: python", which
# the docs tests run (tests/docs/test_docs_run.py refuses python in bare blocks).
highlight_language = "none"
autodoc_member_order = "bysource"
# "Attributes:" sections as fields, not as attribute entries that the
# dataclass fields document a second time
napoleon_use_ivar = True

# Django must be set up before autodoc imports wsbridge_django's modules (some
# import django.contrib.auth models); a minimal in-memory configuration will do.
import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "wsbridge_django",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SECRET_KEY="docs-build-only",
    )
    django.setup()

# `make docs` builds with -n -W: every reference must resolve. The build is
# offline (no intersphinx), so targets outside wsbridge's own docs are listed
# here instead: the standard library's and third-party classes named in
# annotations.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(collections\.abc|typing|re|socket|ssl|logging|threading|datetime)\..+"),
    ("py:.*", r"_?contextvars\..+"),  # Sphinx 8.1 (Python 3.10) names the C module
    ("py:.*", r"(gevent|greenlet|websockets|redis|django|msgpack|gunicorn)\..+"),
    # internal types that appear only in annotations of documented functions
    ("py:class", r"wsbridge\.layers\.redis\.(shard\.Shard|codec\.Decoded)"),
    ("py:class", r"wsbridge\.statuspage\._Rates"),
    # a type alias of wsbridge.transport.wsgi: Sphinx on Python 3.10 leaves its bare name
    ("py:class", r"WSGIApp"),
]
