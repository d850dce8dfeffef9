"""The package's layout follows the data flow: no module imports one of a later stage.

Stages, in order: base (the package itself, errors, settings, faults, stop, retry), extract,
transform, load, pipeline, orchestrate, then the top (cli, console, models,
sample, reports, ...). A module may import its own stage or an earlier one,
and no two modules may import each other, however indirectly. Every import
counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kmdb

STAGES = ("base", "extract", "transform", "load", "pipeline", "orchestrate", "top")
BASE = ("errors", "settings", "faults", "stop", "retry")


def stage_of(module: str, package: str) -> str | None:
    """The stage of a module of the package (None: a subpackage in no stage)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"  # the package's __init__, which every import of a module runs first
    if parts[1] in STAGES[1:-1]:
        return parts[1]
    if len(parts) == 2 and parts[1] in BASE:
        return "base"
    if len(parts) == 2 or parts[1] in ("reports", "bench"):
        return "top"
    return None


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module under root (the package's folder), by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        parts = [package, *relative.parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """(module of the package imported, line) for every import in a module's file."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from package import module` imports the module; otherwise the names
                # are the module's own.
                name = f"{base}.{alias.name}"
                found.append((name if name in known else base, node.lineno))
    return [(name, line) for name, line in found if name in known and name != module]


def check(root: Path, package: str) -> list[str]:
    """Sentences naming each import against the flow, and each import cycle, in a package."""
    known = modules(root, package)
    problems = []
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        stage = stage_of(module, package)
        if stage is None:
            problems.append(f"{module} is in no stage; add its package to tests/test_layering.py.")
            continue
        graph[module] = set()
        for imported, line in imports(path, module, set(known)):
            graph[module].add(imported)
            other = stage_of(imported, package)
            if other is not None and STAGES.index(other) > STAGES.index(stage):
                problems.append(
                    f"{path.relative_to(root.parent)}:{line}: {module} ({stage}) imports "
                    f"{imported} ({other}), a later stage."
                )
    problems += [f"Import cycle: {' -> '.join(cycle)}." for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle of each strongly connected group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(_path_through(sorted(group), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _path_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A cycle within a group of modules that reach each other, from its first module back."""
    members = set(group)
    start = group[0]
    path, seen = [start], {start}
    while True:
        options = sorted(graph[path[-1]] & members)
        if start in options and len(path) > 1:
            return [*path, start]
        nxt = next((o for o in options if o not in seen), None)
        if nxt is None:
            return [*path, start]
        path.append(nxt)
        seen.add(nxt)


def test_no_module_of_kmdb_imports_a_later_stage_or_takes_part_in_a_cycle() -> None:
    root = Path(kmdb.__file__).parent
    assert check(root, "kmdb") == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


def test_an_import_of_a_later_stage_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "errors.py": "",
            "extract/source.py": "from pkg.errors import x\n\n\ndef f():\n    from pkg.load import db\n",
            "load/db.py": "import pkg.extract.source\n",
            "cli.py": "from pkg.load.db import engine\nfrom pkg import errors\n",
        },
    )
    assert check(root, "pkg") == [
        "pkg/extract/source.py:5: pkg.extract.source (extract) imports pkg.load.db (load), "
        "a later stage.",
        "Import cycle: pkg.extract.source -> pkg.load.db -> pkg.extract.source.",
    ]


def test_a_cycle_within_a_stage_is_named(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "load/a.py": "from . import b\n",
            "load/b.py": "from .c import thing\n",
            "load/c.py": "from pkg.load import a\n",
            "load/d.py": "from pkg.load.a import thing\n",
        },
    )
    assert check(root, "pkg") == [
        "Import cycle: pkg.load.a -> pkg.load.b -> pkg.load.c -> pkg.load.a."
    ]


@pytest.mark.parametrize(
    ("module", "stage"),
    [
        ("pkg", "base"),
        ("pkg.errors", "base"),
        ("pkg.retry", "base"),
        ("pkg.extract.s3", "extract"),
        ("pkg.orchestrate", "orchestrate"),
        ("pkg.cli", "top"),
        ("pkg.reports.funnel", "top"),
        ("pkg.elsewhere.thing", None),
    ],
)
def test_stages(module: str, stage: str | None) -> None:
    assert stage_of(module, "pkg") == stage
