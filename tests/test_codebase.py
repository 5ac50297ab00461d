"""Rules of the codebase that a check keeps, not a reviewer (the import layers are
import-linter's contracts in pyproject.toml, run by .ci/run):

* no module of the package, the benchmarks or the tests is over 450 lines: a file holds one
  subject, and past that size it holds several;
* test modules share helpers through ``conftest.py`` and ``helpers.py``, never by importing
  another test module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450
SOURCES = sorted([*ROOT.glob("src/softprompt/**/*.py"), *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("tests/**/*.py")])


def test_the_tree_is_found():
    assert len(SOURCES) > 100 and (ROOT / "src/softprompt/train.py") in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_450_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by subject"


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another():
    tests = {p.stem for p in ROOT.glob("**/tests/test_*.py")}
    offenders = {str(p.relative_to(ROOT)): sorted(_imported(p) & tests) for p in ROOT.glob("**/tests/*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_checks_see_an_import():
    assert _imported(ROOT / "tests/test_codebase.py") >= {"ast", "pytest", "pathlib"}


def test_no_import_cycle_anywhere_in_the_package():
    """import-linter's layers check imports between layers; this checks every module pair,
    lazy (in-function) imports included: no module reaches itself through its imports."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")
    graph = grimp.build_graph("softprompt")
    assert len(graph.modules) > 60
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and imported.startswith("softprompt"):
                back = graph.find_shortest_chain(importer=imported, imported=module)
                if back:
                    cycles.append(" -> ".join((module, *back)))
    assert cycles == []
