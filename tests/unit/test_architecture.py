"""The package boundaries, read from the source with `ast` (every import, function-level ones too).

- `server/` imports nothing from `training/` or `exporters/`: the server's install has no torch.
- `server/contract/` imports nothing else of the server: every part may depend on the contract.
- No import circle inside `training/` or inside `exporters/`, counting function-level imports
  too: a lazy import (to keep torch out of a parser) hides a circle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> Iterator[str]:
    """The modules an import statement names: `from a.b import c` is `a.b.c` when that is a module."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level or node.module is None:
        raise AssertionError(f"relative import at line {node.lineno}: this tree uses absolute imports")
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        yield submodule if submodule in known else node.module


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module `path` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in _imported(node, known)
    }


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as the modules along it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def _graph(package: str) -> dict[str, set[str]]:
    known = _modules(package)
    return {
        module: {name for name in _imports(path, known) if name in known and name != module}
        for module, path in known.items()
    }


@pytest.mark.parametrize("other", ["training", "exporters"])
def test_the_server_imports_nothing_of_training_or_exporters(other: str) -> None:
    known = _modules("server")
    offenders = {
        module: sorted(name for name in _imports(path, known) if _inside(name, other)) for module, path in known.items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_contract_imports_nothing_else_of_the_server() -> None:
    known = _modules("server")
    contract = {module: path for module, path in known.items() if _inside(module, "server.contract")}
    assert contract, "server/contract/ holds the contract modules"
    offenders = {
        module: sorted(
            name for name in _imports(path, known) if _inside(name, "server") and not _inside(name, "server.contract")
        )
        for module, path in contract.items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize("package", ["training", "exporters"])
def test_no_import_circle_inside_the_package(package: str) -> None:
    assert _circle(_graph(package)) is None


def test_a_circle_is_found_when_there_is_one() -> None:
    """The check itself: a two-module circle and a longer one are reported along their path."""
    assert _circle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None
