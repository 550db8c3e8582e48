"""Adopt a team's own CSV: draft its contract and point ``params.yaml`` at it, in one command.

``mlops-template onboard data/raw/mine.csv --target churned --positive yes``

1. Keeps ``data.raw`` the folder of batches (``data/raw/``): the CSV is copied there if it lies
   elsewhere, and raw files whose header differs from it (the bundled Adult data) are moved to
   ``data/archive/``, so validate reads only the new dataset. Nothing is deleted.
2. Drafts ``contracts/<name>.yaml`` from every raw batch (:func:`~mlops_template.pipeline.inference.infer_contract`).
3. Rewrites the params that name the old dataset's columns or describe its business, keeping
   every comment and every other key: ``data.contract``, ``featurize.drop`` and
   ``featurize.derived`` (emptied), ``evaluate.slices`` (up to two small closed categorical
   columns), ``evaluate.value_matrix`` (one per correct decision), ``gate.value_thresholds``
   (emptied: the baseline and champion checks apply), ``deploy.model_name``,
   ``deploy.service_name`` and ``mlflow.experiment``.
4. Prints every decision worth reviewing, then what to run next.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.contract import ContractError
from mlops_template.core.exitcodes import UserError
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
NEUTRAL_VALUE_MATRIX = {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0}


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


def rewrite_params(path: Path, updates: dict[tuple[str, str], tuple[Any, str]]) -> None:
    """Set ``section.key`` values in params.yaml, keeping its layout and every other comment.

    ``updates`` maps (section, key) to (value, comment); the key's end-of-line comment, which
    described the old value, is replaced by ``comment``.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    params = yaml.load(path.read_text(encoding="utf-8"))
    for (section, key), (value, comment) in updates.items():
        mapping = params[section]
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
                token.value = f"{padding}# {comment}{newline}{rest}"
        else:
            mapping.yaml_add_eol_comment(comment, key)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.dump(params, fh)
    tmp.replace(path)


def init_project(csv: str | Path, target: str, positive: str, name: str | None = None,
                 bounds: str = "none", open_categories: bool = False, max_categories: int = 50,
                 force: bool = False) -> int:
    """Adopt ``csv`` as the project's dataset (see the module docstring); returns an exit code.

    A file that is not there or cannot be read, or a contract that exists, is a UserError.
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
                               open_categories=open_categories)
    except (ContractError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(str(exc)) from exc
    draft.contract["name"] = slug
    write_contract(draft.contract, contract_path, ", ".join(str(b) for b in batches))
    slices = _slices(draft.contract)
    service = slug.replace("-", "_") + "_service"
    rewrite_params(PARAMS_FILE, {
        ("data", "raw"): (str(RAW_DIR), "a folder of *.csv / *.csv.gz batches, read in name order"),
        ("data", "contract"): (str(contract_path), f"drafted from {csv.name}: review it"),
        ("featurize", "derived"): ({}, "new numeric columns: arithmetic over contract columns (core/expressions.py)"),
        ("featurize", "drop"): ([], "contract columns the model should not use"),
        ("evaluate", "value_matrix"): (NEUTRAL_VALUE_MATRIX, "1 per correct decision: put your own values here"),
        ("evaluate", "slices"): (slices, "metrics per value of these columns (metrics/slices.json)"),
        ("gate", "value_thresholds"): ({}, "absolute bounds, e.g. {roc_auc: {lower: 0.8}}"),
        ("deploy", "model_name"): (slug, "MLflow registered model and BentoML model name"),
        ("deploy", "service_name"): (service, "BentoML service (bento) name"),
        ("mlflow", "experiment"): (slug, "MLflow experiment of every run"),
    })
    rows = sum(len(f) for f in frames)
    print(f"Drafted {contract_path} from {len(batches)} file(s), {rows} rows x {len(draft.notes)} columns:")
    print(draft.review())
    print("\nFiles:")
    for line in moves or ["data/raw/ already held only this dataset"]:
        print(f"  - {line}")
    print(f"\nparams.yaml now points at it: data.contract={contract_path}, deploy.model_name={slug}, "
          f"deploy.service_name={service}, mlflow.experiment={slug}, evaluate.slices={slices}, "
          "featurize.drop=[], featurize.derived={}, evaluate.value_matrix=accuracy, "
          "gate.value_thresholds={} (the baseline and champion checks apply).")
    print("\nNext: review the contract, then run `dvc repro`.")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template onboard``."""
    add_inference_arguments(parser, positive_required=True)
    parser.add_argument("--force", action="store_true", help="overwrite an existing contract")


def handle(args: argparse.Namespace) -> int:
    """Adopt a CSV as the project's dataset."""
    return init_project(args.csv, args.target, args.positive, name=args.name, bounds=args.bounds,
                        open_categories=args.open_categories, max_categories=args.max_categories,
                        force=args.force)

