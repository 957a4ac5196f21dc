"""The library's shape: rooms by concern, layers point one way, no import circles, kinds own their task.

The layer contracts (cli -> flows -> tasks -> fleet; inside the library ops -> stages -> kinds ->
data | models | metrics | report -> core; no Prefect in the library) are checked by import-linter
(`lint-imports`, configured in pyproject.toml), and complexity by ruff (C901, PLR0912, PLR0915); `make
test` runs both before pytest. These tests check what those do not: circles between the library's own
modules (imports inside functions count too), that every module lives in a room, that no module outside
``fleet/kinds`` knows a task by name, that ``fleet.json`` is read and written by one class, and that only
the settings read the fleet's environment variables.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

from conftest import ROOT

LIBRARY = ROOT / "fleet"
ROOMS = {"labeling", "core", "data", "models", "metrics", "report", "kinds", "stages", "ops"}
TASKS = {"text-classification", "text-generation"}


def library_files() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def code_files() -> list[Path]:
    return [p for d in ("fleet", "tasks", "flows", "cli") for p in sorted((ROOT / d).rglob("*.py"))]


def test_every_library_module_lives_in_a_room():
    top = sorted(p.name for p in LIBRARY.glob("*.py") if p.name != "__init__.py")
    assert not top, f"modules outside the rooms: {top}"
    rooms = {p.name for p in LIBRARY.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == ROOMS, f"rooms: {sorted(rooms)}"
    assert all((LIBRARY / r / "__init__.py").is_file() for r in ROOMS)


def test_no_module_outside_the_kinds_names_a_task():
    """A task's name (and what it implies: metrics, baselines, defaults) is its kind's knowledge."""
    hits = [
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in code_files()
        if LIBRARY / "kinds" not in p.parents
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Constant) and node.value in TASKS
    ]
    assert not hits, "task names outside fleet/kinds:\n" + "\n".join(hits)


def test_fleet_json_is_read_and_written_by_one_class():
    literal = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in code_files()
        if p != LIBRARY / "core" / "records.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"""["']fleet\.json["']""", line)
    ]
    assert not literal, "fleet.json named outside fleet/core/records.py:\n" + "\n".join(literal)


def test_only_the_settings_read_the_fleets_environment_variables():
    readers = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in library_files()
        if p != LIBRARY / "core" / "settings.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"""environ(\.get)?\(?\[?\s*["']FLEET_|getenv\(\s*["']FLEET_""", line)
    ]
    assert not readers, "library modules reading FLEET_* themselves:\n" + "\n".join(readers)


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
