"""The tree is the architecture: who may import whom, and what the bento ships and DVC watches.

- ``serving/`` imports only ``core/`` and ``serving/`` (the bento ships exactly those two);
- ``core/`` imports neither BentoML, MLflow nor DVC, nor any other layer;
- ``pipeline/`` never imports ``ops/`` (promotion sits with the records, canary and rollback);
- (every stage's ``dvc.yaml`` deps cover its import closure, and deploy's what the bento ships:
  ``tests/unit/test_dvc_deps.py``);
- no import cycles anywhere in the package, function-level imports included: a cycle hidden
  inside a function still means neither module can be understood (or moved) without the other.

Imports are read from the source (function-level ones included), not by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.imports import imports_of

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mlops_template"
LAYERS = ("core", "pipeline", "serving", "ops", "monitoring")


def module_name(path: Path) -> str:
    """``mlops_template/ops/canary.py`` -> ``mlops_template.ops.canary`` (a package: its ``__init__``)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Which package modules each package module imports, anywhere in its source (functions too).

    ``from P import n`` is an edge to ``P.n`` when that is a module, else to ``P``; relative
    imports are resolved against the importing module's package.
    """
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["mlops_template.ops.canary"], "the graph misses modules or imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def layer_files(layer: str) -> list[Path]:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules in mlops_template/{layer}"
    return files


def layers_imported(path: Path) -> set[str]:
    return {name.split(".")[1] for name in imports_of(path)
            if name.startswith("mlops_template.") and name.split(".")[1] in LAYERS}


@pytest.mark.parametrize("path", layer_files("serving"), ids=lambda p: p.name)
def test_serving_imports_only_core_and_serving(path: Path) -> None:
    assert layers_imported(path) <= {"core", "serving"}, sorted(imports_of(path))


@pytest.mark.parametrize("path", layer_files("core"), ids=lambda p: p.name)
def test_core_imports_no_framework_and_no_other_layer(path: Path) -> None:
    names = imports_of(path)
    frameworks = {n for n in names if n.split(".")[0] in ("bentoml", "mlflow", "dvc")}
    assert not frameworks, frameworks
    assert layers_imported(path) <= {"core"}, sorted(names)


@pytest.mark.parametrize("path", layer_files("pipeline"), ids=lambda p: p.name)
def test_pipeline_never_imports_ops(path: Path) -> None:
    assert "ops" not in layers_imported(path), sorted(imports_of(path))


def test_the_bento_ships_core_and_serving() -> None:
    from mlops_template.pipeline.packaging import SERVICE_MODULE, SHIPPED

    assert SERVICE_MODULE == "mlops_template.serving.service"
    assert set(SHIPPED) == {"__init__.py", "core/*.py", "core/tasks/*.py", "serving/*.py"}
    # Nothing the service imports lies outside what ships.
    seen, todo = set(), ["mlops_template.serving.service"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = REPO / Path(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if source.exists():
            todo += [n for n in imports_of(source) if n.startswith("mlops_template.")]
    assert {m.split(".")[1] for m in seen} <= {"core", "serving"}, sorted(seen)
