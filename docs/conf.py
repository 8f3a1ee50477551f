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
autodoc_member_order = "bysource"
