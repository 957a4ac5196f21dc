"""The library's shape: layers point one way, no import circles, small functions and modules.

The layer contract itself (cli -> flows -> tasks -> fleet, and no Prefect in the library) is checked by
import-linter (`lint-imports`, configured in pyproject.toml), which `make test` runs before pytest. These
tests check what import-linter does not: circles between the library's own modules (imports inside
functions count too), and the sizes DESIGN.md sets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

from conftest import ROOT

LIBRARY = ROOT / "fleet"
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 300


def library_files() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_library_function_over_50_lines():
    long = [
        f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for p in library_files()
        for name, line, n in functions(p)
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, "functions over 50 lines:\n" + "\n".join(long)


def test_no_library_module_over_300_lines():
    big = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in library_files()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not big, "modules over 300 lines:\n" + "\n".join(big)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("fleet", "tasks", "flows", "cli")


def test_the_library_imports_no_prefect_flows_tasks_or_cli(graph):
    for above in ("tasks", "flows", "cli"):
        assert not graph.find_illegal_dependencies_for_layers(layers=(above, "fleet")), above
    external = grimp.build_graph("fleet", include_external_packages=True)
    imported = {
        (m, dep)
        for m in external.modules
        if m.startswith("fleet")
        for dep in external.find_modules_directly_imported_by(m)
    }
    prefect = sorted(m for m, dep in imported if dep.split(".")[0] in ("prefect", "prefect_dask", "prefect_kubernetes"))
    assert not prefect, f"library modules importing prefect: {prefect}"
    assert any(dep == "mlflow" for _, dep in imported)  # the check sees external imports at all


def test_no_import_circles_in_the_library(graph):
    modules = sorted(m for m in graph.modules if m == "fleet" or m.startswith("fleet."))
    circles = set()
    for a in modules:
        for b in graph.find_modules_directly_imported_by(a):
            if b.startswith("fleet") and b != a and graph.chain_exists(importer=b, imported=a):
                chain = graph.find_shortest_chain(importer=b, imported=a)
                circles.add(" -> ".join([a, *chain]))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))
