"""The tree is the architecture: who may import whom, and what the bento ships and DVC watches.

- ``serving/`` imports only ``core/`` and ``serving/`` (the bento ships exactly those two);
- ``core/`` imports neither BentoML, MLflow nor DVC, nor any other layer;
- ``pipeline/`` never imports ``ops/`` (promotion sits with the records, canary and rollback);
- the deploy stage's ``dvc.yaml`` dependencies cover everything the bento ships, so a change to
  served code repackages the model.

Imports are read from the source (function-level ones included), not by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mlops_template"
LAYERS = ("core", "pipeline", "serving", "ops", "monitoring")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, absolute names, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


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


def test_the_bento_ships_core_and_serving_and_dvc_watches_them() -> None:
    from mlops_template.pipeline.packaging import SERVICE_MODULE, SHIPPED

    assert SERVICE_MODULE == "mlops_template.serving.service"
    assert set(SHIPPED) == {"__init__.py", "core/*.py", "serving/*.py"}
    deps = set(yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["deploy"]["deps"])
    assert {"mlops_template/core", "mlops_template/serving", "requirements-serve.txt"} <= deps
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
