"""The tests' own layout: a test file per module of kmdb, and helpers shared in one place.

The test file of kmdb/MODULE.py is tests/test_MODULE.py; that of
kmdb/PACKAGE/MODULE.py is tests/test_MODULE.py or tests/test_PACKAGE_MODULE.py;
a package's __init__.py that holds code, and its __main__.py, have
tests/test_PACKAGE.py. A tiny module
may be tested in its caller's test file instead, listed in COVERED_ELSEWHERE,
when that file's docstring names it. Test files share what they need through
tests/helpers.py (and the reference models tests/model.py and
tests/reports_oracle.py), never by importing another test file or conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# Tiny modules tested in the test file of the module that calls them: module -> test file.
COVERED_ELSEWHERE = {
    # Twelve lines that call the two removals tested with their modules (bulk, stash);
    # a worker calls it as it starts, in test_workers.py.
    "kmdb/pipeline/leftovers.py": "tests/test_workers.py",
}
SHARED = {"tests.helpers", "tests.model", "tests.reports_oracle"}


def _has_code(path: Path) -> bool:
    """Whether a module holds more than a docstring."""
    body = ast.parse(path.read_text()).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body
    )


def _test_files_for(module: Path, root: Path) -> list[str]:
    """The names a test file of a module of kmdb may have."""
    parts = module.relative_to(root / "kmdb").with_suffix("").parts
    if parts[-1] in ("__init__", "__main__"):  # the package itself, or the package run
        return [f"tests/test_{parts[-2]}.py"] if len(parts) > 1 else []
    names = [f"tests/test_{parts[-1]}.py"]
    if len(parts) > 1:
        names.append(f"tests/test_{'_'.join(parts[-2:])}.py")
    return names


def untested(root: Path = ROOT) -> list[str]:
    """Sentences naming each module of kmdb that has no test file and is not covered elsewhere."""
    problems = []
    for module in sorted((root / "kmdb").rglob("*.py")):
        name = str(module.relative_to(root))
        if not _has_code(module):
            continue
        if name in COVERED_ELSEWHERE:
            covering = root / COVERED_ELSEWHERE[name]
            docstring = ast.get_docstring(ast.parse(covering.read_text())) or ""
            if module.stem not in docstring:
                problems.append(
                    f"{COVERED_ELSEWHERE[name]} is said to test {name}, but its docstring "
                    f"does not name {module.stem}."
                )
            continue
        candidates = _test_files_for(module, root)
        if candidates and not any((root / c).is_file() for c in candidates):
            problems.append(f"{name} has no test file: write {candidates[0]}.")
    return problems


def test_every_module_of_kmdb_has_a_test_file() -> None:
    assert untested() == []


def test_a_module_without_a_test_file_is_named_with_the_file_to_write(tmp_path: Path) -> None:
    (tmp_path / "kmdb" / "load").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "kmdb" / "__init__.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "kmdb" / "load" / "__init__.py").write_text("")
    (tmp_path / "kmdb" / "load" / "pouring.py").write_text("def pour() -> None: ...\n")
    (tmp_path / "kmdb" / "load" / "stirring.py").write_text("def stir() -> None: ...\n")
    (tmp_path / "tests" / "test_load_stirring.py").write_text("")
    assert untested(tmp_path) == [
        "kmdb/load/pouring.py has no test file: write tests/test_pouring.py."
    ]


def shared_imports(path: Path) -> list[str]:
    """The test modules (other than the shared ones) that a test file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if not node.level else [f"tests.{node.module or ''}"]
            if node.module == "tests" or node.level:
                names = [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n for n in names if n.startswith("tests.") and n not in SHARED]
    return found


def test_test_files_share_only_the_helpers_and_the_models() -> None:
    problems = {
        str(path.relative_to(ROOT)): imported
        for path in sorted(TESTS.glob("*.py"))
        if (imported := shared_imports(path))
    }
    assert problems == {}


def test_every_exception_is_a_module_that_exists() -> None:
    for module, test_file in COVERED_ELSEWHERE.items():
        assert (ROOT / module).is_file(), module
        assert (ROOT / test_file).is_file(), test_file
