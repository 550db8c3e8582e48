"""Each stage reads only the params it declares in ``dvc.yaml``, so changing any other key never leaves it stale.

What a stage reads is recorded, not listed by hand: its ``main()`` runs with params.yaml loaded
as usual but wrapped in a recorder, and its work function (``run``) replaced by one that keeps
the arguments. A section handed on whole counts as reading all of it; a key read from a section
counts as that key. Every recorded read must be declared in the stage's ``params:`` (the section,
or that very key), or be a key interpolated into its ``deps:`` (``${data.contract}``: a changed
path is a changed dep). The whole params object must never be handed on, and params.yaml is read
once. The params are real: ``main()`` loads the repository's params.yaml.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_template.core.params import Params, Section
from mlops_template.core.params import load as load_params

REPO = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
INTERPOLATED = re.compile(r"\$\{([^}]+)\}")


class SectionRecorder:
    """One section: records each key read from it; handing it on whole is seen in the arguments."""

    def __init__(self, name: str, section: Section, reads: set[str]):
        self._name, self._section, self._reads = name, section, reads

    def __getattr__(self, key: str) -> Any:
        self._reads.add(f"{self._name}.{key}")
        return getattr(self._section, key)


class ParamsRecorder:
    """The whole params: records each section taken from it."""

    def __init__(self, params: Params):
        self._params, self.reads, self.sections = params, set(), {}

    def __getattr__(self, name: str) -> SectionRecorder:
        recorder = SectionRecorder(name, self._params.section(name), self.reads)
        self.sections[id(recorder)] = name
        return recorder


def declared(stage: dict) -> set[str]:
    """The stage's ``params:`` keys and the keys interpolated into its deps."""
    keys = {p for p in stage.get("params", []) if isinstance(p, str)}
    return keys | {m for d in stage.get("deps", []) for m in INTERPOLATED.findall(str(d))}


def is_declared(key: str, keys: set[str]) -> bool:
    """``key`` (``section`` or ``section.key``) is declared itself or through its section."""
    return key in keys or key.split(".")[0] in keys


def stage_module(stage: dict) -> str:
    words = stage["cmd"].split()
    assert words[:2] == ["python", "-m"] and words[2].startswith("stages."), stage["cmd"]
    return words[2]


def what_main_reads(module_name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], list[Any], int]:
    """(keys and whole sections read, arguments handed to ``run``, how often params were loaded)."""
    module = importlib.import_module(module_name)
    params = load_params(REPO / "params.yaml")
    recorder, loads, handed = ParamsRecorder(params), [], []

    def load_once(*args: Any, **kwargs: Any) -> ParamsRecorder:
        loads.append(args)
        return recorder

    def keep(*args: Any, **kwargs: Any) -> int:
        handed.extend([*args, *kwargs.values()])
        return 0

    monkeypatch.setattr(module, "params_or_exit", load_once)
    monkeypatch.setattr(module, "run", keep)
    monkeypatch.setattr(module, "setup_logging", lambda *a, **k: None)
    module.main()
    whole = {recorder.sections[id(a)] for a in handed if isinstance(a, SectionRecorder)}
    assert not any(isinstance(a, (ParamsRecorder, Params)) for a in handed), \
        f"{module_name}.main() hands on the whole params; pass the sections dvc.yaml declares"
    return recorder.reads | whole, handed, len(loads)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_reads_only_the_params_it_declares(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = STAGES[name]
    reads, _, loads = what_main_reads(stage_module(stage), monkeypatch)
    assert loads == 1, f"stage {name} reads params.yaml {loads} times"
    assert reads, f"stage {name} reads no params at all?"
    undeclared = sorted(k for k in reads if not is_declared(k, declared(stage)))
    assert not undeclared, (f"stage {name} reads {undeclared}, which its dvc.yaml params do not declare "
                            f"(declared: {sorted(declared(stage))}): changing them would not rerun it")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_declares_nothing_it_does_not_read(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other direction: a declared key nobody reads reruns the stage for nothing."""
    stage = STAGES[name]
    reads, _, _ = what_main_reads(stage_module(stage), monkeypatch)
    unused = sorted(k for k in stage.get("params", []) if not any(r == k or r.startswith(f"{k}.") or k.startswith(
        f"{r}.") for r in reads))
    assert not unused, f"stage {name} declares {unused} in dvc.yaml but never reads them"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_only_main_loads_params(name: str) -> None:
    """The work function gets sections; nothing else in the stage script reads params.yaml."""
    path = REPO / Path(*stage_module(STAGES[name]).split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    loaders = {"params_or_exit", "load_params", "read_mapping"}

    def loads(call: ast.Call) -> bool:  # a bare ``load()`` is core.params.load; ``golden.load()`` is not
        func = call.func
        return (isinstance(func, ast.Name) and func.id in loaders | {"load"}) or \
            (isinstance(func, ast.Attribute) and func.attr in loaders)

    callers = [fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
               for call in ast.walk(fn) if isinstance(call, ast.Call) and loads(call)]
    assert callers == ["main"], f"{path.name}: params loaded in {callers}"


def test_the_recorder_sees_a_read_of_an_undeclared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a key read but not declared is caught, a declared section covers its keys."""
    recorder = ParamsRecorder(load_params(REPO / "params.yaml"))
    recorder.featurize.seed  # noqa: B018 - the read is the point
    keys = {"train", "deploy.model_name"}
    assert recorder.reads == {"featurize.seed"} and not is_declared("featurize.seed", keys)
    assert is_declared("train.seed", keys) and is_declared("deploy.model_name", keys)
    assert not is_declared("deploy.service_name", keys)
