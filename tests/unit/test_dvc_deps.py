"""Every stage's ``dvc.yaml`` deps cover the package code it runs, so a change to that code reruns it.

For each stage, the modules its script imports are followed transitively (function-level imports
included, read from the source with ``ast``, not by importing it); every module file of
``mlops_template`` reached must be a dep of the stage, itself or through a folder dep. A package's
``__init__.py`` counts when it holds code (a docstring alone cannot change what a stage does).
The deploy stage also depends on everything the bento ships and on the serving requirements.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest
import yaml

from tests.support.imports import imports_of

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "mlops_template"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def module_file(module: str) -> Path | None:
    """The source file of a dotted module name under the repository, or None (not ours, or no such)."""
    path = REPO / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def has_code(init: Path) -> bool:
    """True when a package's ``__init__.py`` holds more than a docstring."""
    body = ast.parse(init.read_text(encoding="utf-8")).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def closure(script: Path) -> set[Path]:
    """The package's module files that running ``script`` may execute, repository-relative."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imports_of(path):
            if module.split(".")[0] != PACKAGE:
                continue
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:depth]))
                if found is not None and (found.name != "__init__.py" or has_code(found)):
                    todo.append(found)
    return {p.relative_to(REPO) for p in seen if p != script and PACKAGE in p.parts}


def covered(path: Path, deps: list[str]) -> bool:
    """``path`` is a dep, or lies in a folder that is one."""
    text = path.as_posix()
    return any(text == d.rstrip("/") or text.startswith(d.rstrip("/") + "/") for d in deps)


def stage_script(stage: dict) -> Path:
    """The script a stage's ``cmd`` runs (``python -m stages.x``)."""
    words = stage["cmd"].split()
    assert words[:2] == ["python", "-m"], f"cmd {stage['cmd']!r}: expected `python -m stages.<name>`"
    path = module_file(words[2])
    assert path is not None, f"no source for {words[2]}"
    return path


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_deps_cover_the_stage_import_closure(name: str) -> None:
    stage = STAGES[name]
    deps = [d for d in stage["deps"] if isinstance(d, str)]
    script = stage_script(stage)
    assert covered(script.relative_to(REPO), deps), f"{name}: its script {script.name} is not a dep"
    missing = sorted(p.as_posix() for p in closure(script) if not covered(p, deps))
    assert not missing, f"stage {name} imports these package modules but dvc.yaml does not list them as deps: {missing}"


def test_the_closure_follows_function_level_imports_and_package_inits() -> None:
    """The walk itself: imports inside functions are followed; a docstring-only ``__init__`` is not counted."""
    deploy = {p.as_posix() for p in closure(REPO / "stages" / "deploy.py")}
    evaluate = {p.as_posix() for p in closure(REPO / "stages" / "evaluate.py")}
    assert "mlops_template/pipeline/packaging.py" in deploy  # promotion imports it inside package()
    assert "mlops_template/serving/inference_log.py" in evaluate  # assessment imports it inside a function
    assert "mlops_template/pipeline/__init__.py" not in evaluate
    assert has_code(REPO / PACKAGE / "monitoring" / "__init__.py")
    assert not has_code(REPO / PACKAGE / "pipeline" / "__init__.py")


def test_deploy_depends_on_everything_the_bento_ships() -> None:
    """A change to served code or its requirements repackages the model (folded from the import-boundary test)."""
    from mlops_template.pipeline.packaging import SHIPPED

    deps = STAGES["deploy"]["deps"]
    shipped = [p.relative_to(REPO) for p in (REPO / PACKAGE).rglob("*.py")
               if any(fnmatch.fnmatch(p.relative_to(REPO / PACKAGE).as_posix(), pattern) for pattern in SHIPPED)
               and (p.name != "__init__.py" or has_code(p))]
    assert shipped
    assert not [p for p in shipped if not covered(p, deps)]
    assert {"mlops_template/core", "mlops_template/serving", "requirements-serve.txt",
            "constraints-serve.txt"} <= set(deps)
