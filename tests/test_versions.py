"""The supported-versions matrix is stated three times; they must agree.

noxfile.py runs it, docs/topics/versions.rst shows it, setup.py declares it
(classifiers, python_requires). A combination added to one and not the others
fails here, with the difference in the message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nox_matrix() -> list[tuple[str, str, str]]:
    """MATRIX from noxfile.py, read without importing nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    names: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("DEFAULT", "MATRIX"):
                names[name] = eval(
                    compile(ast.Expression(node.value), "noxfile", "eval"), {}, names
                )  # noqa: S307
    return [tuple(row) for row in names["MATRIX"]]  # type: ignore[union-attr]


def docs_matrix() -> list[tuple[str, str, str]]:
    """The rows of the first list-table in docs/topics/versions.rst."""
    text = (ROOT / "docs" / "topics" / "versions.rst").read_text()
    table = text.split(".. list-table::", 2)[1]
    cells = re.findall(r"^   [* ] - (.*)$", table, re.M)
    rows = [cells[i : i + 4] for i in range(0, len(cells), 4)][1:]  # minus the header
    return [(python, django, deps) for python, django, deps, _ in rows]


def setup_text() -> str:
    return (ROOT / "setup.py").read_text()


def test_docs_table_is_the_nox_matrix_in_order():
    assert docs_matrix() == nox_matrix()


def test_the_first_row_is_the_default_one_that_make_test_runs_whole():
    text = (ROOT / "docs" / "topics" / "versions.rst").read_text()
    assert "the whole suite (the default combination)" in text.split("* - 3.10")[0]


def test_classifiers_name_every_python_and_django_of_the_matrix_and_no_other():
    setup = setup_text()
    matrix = nox_matrix()
    pythons = set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', setup))
    djangos = set(re.findall(r'"Framework :: Django :: (\d+\.\d+)"', setup))
    assert pythons == {python for python, _, _ in matrix}
    assert djangos == {django for _, django, _ in matrix}


def test_python_requires_and_the_django_extra_bound_the_matrix():
    setup = setup_text()
    matrix = nox_matrix()
    lowest_python = min(
        (python for python, _, _ in matrix), key=lambda v: tuple(map(int, v.split(".")))
    )
    assert f'python_requires=">={lowest_python}"' in setup
    bound = re.search(r'"django>=([\d.]+),<([\d.]+)"', setup)
    assert bound is not None, "the django extra has no upper bound"
    djangos = sorted(
        {django for _, django, _ in matrix}, key=lambda v: tuple(map(int, v.split(".")))
    )
    assert bound.group(1) == djangos[0]
    newest = tuple(map(int, djangos[-1].split(".")))
    assert tuple(map(int, bound.group(2).split("."))) == (newest[0], newest[1] + 1)


def test_oldest_rows_exist_for_the_lowest_python():
    matrix = nox_matrix()
    assert {deps for _, _, deps in matrix} == {"oldest", "newest"}
    assert all(python == "3.10" for python, _, deps in matrix if deps == "oldest")
