"""The fast Autobahn subset (kosoku) against ``wsbridge serve``: zero failures.

The whole suite (517 cases) runs with ``make conformance``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# Loaded under its own name: "run" alone could clash with another module.
_spec = importlib.util.spec_from_file_location(
    "wsbridge_conformance_run", Path(__file__).with_name("run.py")
)
assert _spec is not None and _spec.loader is not None
conformance = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = conformance  # dataclasses look their module up there
_spec.loader.exec_module(conformance)


def test_quick_conformance_subset_has_no_failure():
    summary = conformance.run(conformance.QUICK_CASES, parallelism=4)
    assert summary.failures == {}
    assert summary.failed == 0 and summary.unimplemented == 0
    assert summary.passed == summary.total > 100
