"""The deploy stage reruns whenever code that the bento ships changes."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "mlops_template"


def imported_modules(path: Path) -> set[str]:
    """``mlops_template`` modules imported anywhere in a file, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            if node.module == PACKAGE:
                found |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(f"{PACKAGE}.")}
    return found


def module_file(module: str) -> Path:
    path = REPO / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def service_closure() -> set[str]:
    """Repository paths of the service module and everything it imports, transitively."""
    seen: set[str] = set()
    todo = [f"{PACKAGE}.service"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imported_modules(module_file(module)) - seen)
    return {module_file(m).relative_to(REPO).as_posix() for m in seen}


def test_deploy_depends_on_every_module_the_service_imports() -> None:
    deps = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["deploy"]["deps"])
    closure = service_closure()
    assert {"mlops_template/service.py", "mlops_template/scoring.py"} <= closure
    assert closure - deps == set(), "add these to the deploy stage's deps in dvc.yaml"
