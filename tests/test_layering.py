"""The package's shape (DESIGN.md): data flows one way, and no two modules import each other.

Imports are read with `ast`, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sinkrec"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every sinkrec module `name` imports (absolute or relative, at any depth of the file)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import x` / `from .a import b` may name a module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_relative_imports_are_resolved():
    assert "sinkrec.batch" in GRAPH["sinkrec.models.base"]
    assert "sinkrec.training.checkpoint" in GRAPH["sinkrec.training.trainer"]  # `from . import checkpoint`


@pytest.mark.parametrize("layer", ["sinkrec.models", "sinkrec.nn", "sinkrec.ops"])
def test_model_layers_know_nothing_of_data_or_training(layer):
    above = ("sinkrec.data", "sinkrec.training", "sinkrec.eval", "sinkrec.serve", "sinkrec.cli", "sinkrec.experiment",
             "sinkrec.api", "sinkrec.lm", "sinkrec.diagnostics", "sinkrec.recommend")
    bad = [(name, dep) for name, deps in GRAPH.items() if name == layer or name.startswith(layer + ".")
           for dep in deps if any(dep == a or dep.startswith(a + ".") for a in above)]
    assert not bad, bad


def test_ops_and_nn_do_not_reach_up():
    bad = [(n, d) for n, deps in GRAPH.items() for d in deps
           if (n.startswith("sinkrec.ops") and d.startswith(("sinkrec.nn", "sinkrec.models")))
           or (n.startswith("sinkrec.nn") and d.startswith("sinkrec.models"))]
    assert not bad, bad


def test_config_schema_imports_no_model():
    assert not {d for d in GRAPH["sinkrec.config"] if d.startswith(("sinkrec.models", "sinkrec.nn"))}


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state:
            cycle = visit(name)
            assert cycle is None, " → ".join(cycle)
