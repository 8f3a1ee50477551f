"""The bench harness: processes, virtualenvs, targets, workloads, report.

Standard library only, so ``python bench/run.py`` works with any Python 3.10+;
the peers run in their own virtualenvs under ``bench/.venvs/`` and the plots
are drawn in ``bench/.venvs/tools`` (matplotlib).
"""

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENVS_DIR = BENCH_DIR / ".venvs"
