"""The fast Autobahn subset (kosoku) against ``wsbridge serve``: zero failures.

The whole suite (517 cases) runs with ``make conformance``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as conformance  # noqa: E402


def test_quick_conformance_subset_has_no_failure():
    summary = conformance.run(conformance.QUICK_CASES, parallelism=4)
    assert summary.failures == {}
    assert summary.failed == 0 and summary.unimplemented == 0
    assert summary.passed == summary.total > 100
