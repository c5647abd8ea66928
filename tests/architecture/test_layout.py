"""The layout's rules, read from the source (docs/architecture.md): no import cycle, not even
through an import inside a function; dependencies one way (pipelines -> assets -> resources;
sandbox alone); in every package no module over 500 lines, no two modules of one
package with the same file name, a docstring in every module; and every module the day
fingerprints stamp exists."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from assets.harvest import day_fingerprint

from support import PROJECT

PACKAGES = ("sandbox", "resources", "assets", "pipelines")  # lowest layer first
ARRANGED = PACKAGES  # what the size, name and docstring rules cover
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((PROJECT / package).rglob("*.py")):
            parts = path.relative_to(PROJECT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module of the project, line) for every import in `path`, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from package import module` imports the module (its package is its parent,
            # imported first whoever imports it); `from module import name`, the module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: dict(imported(name, path, known)) for name, path in known.items()}


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from assets.harvest.lease import DayLease\n")
    found = dict(imported("late", source, modules()))
    assert found == {"assets.harvest.lease": 2}


def test_no_import_cycle_not_even_through_a_function_level_import():
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for target in edges[name]:
            visit(target, [*path, name])
        done.add(name)

    for name in edges:
        visit(name, [])


def test_dependencies_point_one_way():
    against = [
        f"{name} imports {target} (line {line})"
        for name, targets in graph().items()
        for target, line in targets.items()
        if (low := name.split(".")[0]) != (high := target.split(".")[0])
        and (low == "sandbox" or PACKAGES.index(low) < PACKAGES.index(high))
    ]
    assert not against


@pytest.mark.parametrize("package", ARRANGED)
def test_modules_are_short_named_once_and_say_what_they_hold(package):
    paths = sorted((PROJECT / package).rglob("*.py"))
    long = {
        str(p.relative_to(PROJECT)): n
        for p in paths
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long
    names = [p.name for p in paths if p.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    undocumented = [
        str(p.relative_to(PROJECT))
        for p in paths
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not undocumented


def test_every_module_the_day_fingerprints_stamp_exists():
    missing = [name for name in day_fingerprint._CODE if not (PROJECT / name).is_file()]
    assert not missing
    assert day_fingerprint.code_digest()
