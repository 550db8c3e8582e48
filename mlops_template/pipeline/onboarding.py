"""Adopt a team's own CSV: draft its contract and point ``params.yaml`` at it, in one command.

``mlops-template onboard data/raw/mine.csv --target churned`` (``--positive yes``, ``--task ...``)

1. Keeps ``data.raw`` the folder of batches (``data/raw/``): the CSV is copied there if it lies
   elsewhere, and raw files whose header differs from it (the bundled Adult data) are moved to
   ``data/archive/``, so validate reads only the new dataset. Nothing is deleted.
2. Drafts ``contracts/<name>.yaml`` from every raw batch (:func:`~mlops_template.pipeline.inference.infer_contract`),
   with the task the target's values suggest (binary, multiclass, regression) or ``--task``.
3. Rewrites the params that name the old dataset's columns or describe its business, keeping
   every comment and every other key: ``data.contract``, ``featurize.drop`` and
   ``featurize.derived`` (emptied), ``evaluate.slices`` (up to two small closed categorical
   columns), ``deploy.model_name``, ``deploy.service_name`` and ``mlflow.experiment``; and for the
   task (:func:`task_params`): ``gate.baseline_thresholds`` and ``gate.change_thresholds`` on its
   metrics, ``gate.value_thresholds`` (emptied: the baseline and champion checks apply),
   ``gate.slices.metric``, and the ``evaluate`` key that prices its answers (binary
   ``value_matrix``, one per correct decision; regression ``costs``), the other tasks' removed.
4. Prints the task and every decision worth reviewing, then what to run next.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.contract import Contract, ContractError, contract_from_dict
from mlops_template.core.exitcodes import UserError
from mlops_template.core.gate_params import SliceGate
from mlops_template.core.tasks import Task, task_of
from mlops_template.pipeline.inference import (
    add_inference_arguments,
    infer_contract,
    read_csv_for_inference,
    write_contract,
)
from mlops_template.pipeline.validation import RAW_SUFFIXES

logger = logging.getLogger(__name__)

PARAMS_FILE, RAW_DIR, ARCHIVE_DIR, CONTRACTS_DIR = paths.PARAMS, paths.RAW, paths.ARCHIVE, paths.CONTRACTS
MAX_SLICES = 2
MAX_SLICE_VALUES = 10
# The evaluate keys that price one task's answers (Task.value_params drafts its own; the others are removed).
PRICING_COMMENTS = {
    "value_matrix": "1 per correct decision: put your own values here",
    "costs": "cost of one unit of over- and of under-prediction: put your own here",
    "class_values": "actual class -> predicted class -> value (none: 1 per right answer)",
}
PRICING_KEYS = tuple(PRICING_COMMENTS)
REMOVE = object()  # a rewrite_params value: delete the key


def model_slug(text: str) -> str:
    """A name valid for MLflow, BentoML models and DVC: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"model-{slug}".strip("-")
    return slug[:50]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(RAW_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _header(path: Path) -> list[str]:
    return [c.strip() for c in pd.read_csv(path, nrows=0).columns]


def arrange_raw_folder(csv: Path, raw_dir: Path, archive_dir: Path) -> tuple[Path, list[Path], list[str]]:
    """Put ``csv`` into ``raw_dir``; move raw files of another shape to ``archive_dir``.

    Returns the CSV's place in ``raw_dir``, the raw batches that share its header, and one line
    per file moved or copied.
    """
    done: list[str] = []
    raw_dir.mkdir(parents=True, exist_ok=True)
    if csv.resolve().parent != raw_dir.resolve():
        target = raw_dir / csv.name
        if target.exists():
            raise ContractError(f"{target} exists already: put your CSV there yourself or rename it")
        shutil.copyfile(csv, target)
        done.append(f"copied {csv} to {target}")
        csv = target
    header = _header(csv)
    batches = []
    for other in sorted(p for p in raw_dir.iterdir() if p.name.endswith(RAW_SUFFIXES)):
        if other.resolve() == csv.resolve() or _header(other) == header:
            batches.append(other)
            continue
        archive_dir.mkdir(parents=True, exist_ok=True)
        moved = archive_dir / other.name
        if moved.exists():
            raise ContractError(f"cannot move {other} aside: {moved} exists")
        shutil.move(other, moved)
        done.append(f"moved {other} to {moved}: its columns differ from {csv.name} "
                    "(`git rm` it, or move it back to train on it again)")
    return csv, batches, done


def _slices(contract: dict[str, Any]) -> list[str]:
    small = [name for name, spec in contract["columns"].items()
             if spec.get("role") == "categorical" and 1 < len(spec.get("allowed") or ()) <= MAX_SLICE_VALUES]
    return small[:MAX_SLICES]


def rewrite_params(path: Path, updates: dict[tuple[str, ...], tuple[Any, str]]) -> list[str]:
    """Set ``section.key`` (or ``section.key.subkey``) values in params.yaml, keeping its layout and comments.

    ``updates`` maps (section, key, ...) to (value, comment); the key's end-of-line comment, which
    described the old value, is replaced by ``comment``; a key that already holds the value is left
    as it is. The value :data:`REMOVE` deletes the key (a missing one stays missing); a missing
    parent mapping is created. Returns the dotted names of the keys removed.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    params = yaml.load(path.read_text(encoding="utf-8"))
    removed: list[str] = []
    for (*parents, key), (value, comment) in updates.items():
        mapping = params
        for name in parents:
            if mapping.get(name) is None:
                mapping[name] = CommentedMap()
            mapping = mapping[name]
        if value is REMOVE:
            if key in mapping:
                del mapping[key]
                removed.append(".".join([*parents, key]))
            continue
        if key in mapping and mapping[key] == value:
            continue  # already so: its layout and comment stay
        if isinstance(value, dict):
            value = CommentedMap(value)
            value.fa.set_flow_style()
        elif isinstance(value, list):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        mapping[key] = value
        token = mapping.ca.items.get(key, [None] * 4)[2]
        if token is not None:
            first, newline, rest = token.value.partition("\n")
            if first.lstrip().startswith("#"):
                padding = first[: len(first) - len(first.lstrip())]
                # Lines aligned under the old comment continued it: they described the old value too.
                rest = "\n".join(line for line in rest.split("\n") if not (
                    line.lstrip().startswith("#") and len(line) - len(line.lstrip()) == token.column))
                token.value = f"{padding}# {comment}{newline}{rest}"
        else:
            mapping.yaml_add_eol_comment(comment, key)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.dump(params, fh)
    tmp.replace(path)
    return removed


def _slice_metric(task: Task) -> str | None:
    """``gate.slices.metric`` for ``task``: the default (``soft_recall``) where the task has it, else its first.

    The slice metrics each task offers are :data:`mlops_template.pipeline.comparison.SLICE_METRICS`;
    None when the task has none.
    """
    from mlops_template.pipeline.comparison import SLICE_METRICS

    known = list(SLICE_METRICS.get(task.name, {}))
    default = SliceGate().metric
    return default if default in known else (known[0] if known else None)


def task_params(contract: Contract) -> dict[tuple[str, ...], tuple[Any, str]]:
    """The params.yaml edits that suit the contract's task: gate thresholds, slice metric, value matrix."""
    task = task_of(contract)
    gate = task.gate_thresholds()
    side = "lower" if task.primary_direction == "higher_is_better" else "upper"
    updates: dict[tuple[str, ...], tuple[Any, str]] = {
        ("gate", "baseline_thresholds"): (gate["baseline_thresholds"],
                                          f"{task.name}: the candidate against the know-nothing model (same test set)"),
        ("gate", "change_thresholds"): (gate["change_thresholds"],
                                        f"{task.name}: challenger minus champion, both scored on this test set"),
        ("gate", "value_thresholds"): ({}, f"absolute bounds, e.g. {{{task.primary_metric}: {{{side}: ...}}}}"),
    }
    metric = _slice_metric(task)
    if metric is not None:
        updates[("gate", "slices", "metric")] = (metric, f"a {task.name} slice metric "
                                                         "(mlops_template/pipeline/comparison.py)")
    values = task.value_params()
    for key in PRICING_KEYS:
        updates[("evaluate", key)] = (values[key], PRICING_COMMENTS[key]) if key in values else (REMOVE, "")
    return updates


def _described(updates: dict[tuple[str, ...], tuple[Any, str]], removed: list[str]) -> str:
    """The task's params as ``key=value`` lines, then the other tasks' keys removed."""
    lines = [f"{'.'.join(key)}={json.dumps(value)}" for key, (value, _) in updates.items() if value is not REMOVE]
    if removed:
        lines.append(f"removed (another task's): {', '.join(removed)}")
    return "\n  ".join(lines)


def init_project(csv: str | Path, target: str, positive: str | None = None, name: str | None = None,
                 bounds: str = "none", open_categories: bool = False, max_categories: int = 50,
                 force: bool = False, task: str | None = None) -> int:
    """Adopt ``csv`` as the project's dataset (see the module docstring); returns an exit code.

    The task is ``task`` when given, else what the target's values suggest
    (:func:`~mlops_template.pipeline.inference.infer_contract`). A file that is not there or cannot
    be read, a target that cannot be that task, or a contract that exists, is a UserError.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise UserError(f"{csv} is not a file")
    slug = model_slug(name or _stem(csv))
    contract_path = CONTRACTS_DIR / f"{slug}.yaml"
    if contract_path.exists() and not force:
        raise UserError(f"{contract_path} exists; delete it or pass --force to draft it again")
    try:
        csv, batches, moves = arrange_raw_folder(csv, RAW_DIR, ARCHIVE_DIR)
        frames = [read_csv_for_inference(batch) for batch in batches]
        draft = infer_contract(pd.concat(frames, ignore_index=True), target=target, positive=positive,
                               max_categories=max_categories, bounds=bounds,
                               open_categories=open_categories, task=task)
        draft.contract["name"] = slug
        contract = contract_from_dict(draft.contract)
    except (ContractError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(str(exc)) from exc
    write_contract(draft.contract, contract_path, ", ".join(str(b) for b in batches))
    slices = _slices(draft.contract)
    service = slug.replace("-", "_") + "_service"
    per_task = task_params(contract)
    removed = rewrite_params(PARAMS_FILE, {
        ("data", "raw"): (str(RAW_DIR), "a folder of *.csv / *.csv.gz batches, read in name order"),
        ("data", "contract"): (str(contract_path), f"drafted from {csv.name}: review it"),
        ("featurize", "derived"): ({}, "new numeric columns: arithmetic over contract columns (core/expressions.py)"),
        ("featurize", "drop"): ([], "contract columns the model should not use"),
        ("evaluate", "slices"): (slices, "metrics per value of these columns (metrics/slices.json)"),
        ("deploy", "model_name"): (slug, "MLflow registered model and BentoML model name"),
        ("deploy", "service_name"): (service, "BentoML service (bento) name"),
        ("mlflow", "experiment"): (slug, "MLflow experiment of every run"),
        **per_task,
    })
    rows = sum(len(f) for f in frames)
    print(f"Drafted {contract_path} from {len(batches)} file(s), {rows} rows x {len(draft.notes)} columns; "
          f"{draft.choice}:")
    print(draft.review())
    print("\nFiles:")
    for line in moves or ["data/raw/ already held only this dataset"]:
        print(f"  - {line}")
    print(f"\nparams.yaml now points at it: data.contract={contract_path}, deploy.model_name={slug}, "
          f"deploy.service_name={service}, mlflow.experiment={slug}, evaluate.slices={slices}, "
          "featurize.drop=[], featurize.derived={}, and for the task:")
    print(f"  {_described(per_task, removed)}")
    print("  (gate.value_thresholds={}: the baseline and champion checks apply.)")
    print("\nNext: review the contract, then run `dvc repro`.")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template onboard``."""
    add_inference_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite an existing contract")


def handle(args: argparse.Namespace) -> int:
    """Adopt a CSV as the project's dataset."""
    return init_project(args.csv, args.target, args.positive, name=args.name, bounds=args.bounds,
                        open_categories=args.open_categories, max_categories=args.max_categories,
                        force=args.force, task=args.task)

