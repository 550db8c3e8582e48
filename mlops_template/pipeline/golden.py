"""The golden evaluation set: rows fixed once, by a person, that no incoming batch ever feeds.

The rolling test set grows with every accepted batch, so whoever writes a batch also writes part
of the data the gate judges on. The golden set is a snapshot of the test split taken once, when
a person runs ``mlops-template golden freeze`` (after the first model is deployed):

- ``data/golden/golden.parquet``: the rows, contract columns and label; tracked by DVC with its
  own ``golden.parquet.dvc`` file (not a stage output, so ``dvc repro`` never writes it, and a
  new batch changes nothing in it);
- ``data/golden/manifest.json`` (git-tracked): its sha256, row count, source, who froze it, when
  and why, and the manifests it replaced. The evaluate stage refuses a golden file whose digest
  differs from the manifest's, and a manifest whose file is missing (``dvc pull`` it).

Freezing again replaces the rows only with ``--replace --reason``; the old manifest is kept in
the new one's ``replaced`` list, so the change is in git history and in the file itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.contract import Contract
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.io import read_json, sha256_of, utc_now, write_frame, write_json
from mlops_template.core.tasks import task_of

logger = logging.getLogger(__name__)

DIRECTORY = Path("data/golden")
ROWS = DIRECTORY / "golden.parquet"
MANIFEST = DIRECTORY / "manifest.json"


class GoldenSetError(RuntimeError):
    """The golden set is missing, altered, or cannot be frozen as asked."""


def load(directory: Path = DIRECTORY) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The golden rows and their manifest, checked against its sha256; None before the first freeze."""
    manifest_path, rows_path = directory / MANIFEST.name, directory / ROWS.name
    if not manifest_path.exists():
        return None
    manifest = read_json(manifest_path)
    if not rows_path.exists():
        raise GoldenSetError(f"{manifest_path} names a golden set of {manifest['rows']} rows but {rows_path} is "
                             "missing: run `dvc pull` (or `dvc checkout`) to restore it")
    actual = sha256_of(rows_path)
    if actual != manifest["sha256"]:
        raise GoldenSetError(f"{rows_path} has sha256 {actual}, but {manifest_path} records {manifest['sha256']}: "
                             "the golden set was altered outside `python -m mlops_template golden freeze`")
    return pd.read_parquet(rows_path), manifest


def freeze(source: pd.DataFrame, contract: Contract, max_rows: int, seed: int, reason: str, who: str,
           source_name: str, directory: Path = DIRECTORY, replace: bool = False) -> dict[str, Any]:
    """Write a sample of ``source`` (contract columns only) as the golden set and its manifest."""
    manifest_path, rows_path = directory / MANIFEST.name, directory / ROWS.name
    previous = read_json(manifest_path) if manifest_path.exists() else None
    if previous is not None and not replace:
        raise GoldenSetError(f"a golden set exists ({previous['rows']} rows frozen {previous['frozen_at']} by "
                             f"{previous['frozen_by']}); pass --replace with --reason to change it")
    if previous is not None and not reason.strip():
        raise GoldenSetError("replacing the golden set needs a --reason")
    missing = [c for c in contract.column_names if c not in source.columns]
    if missing:
        raise GoldenSetError(f"the source {source_name} lacks contract columns {missing}")
    labels = source[contract.target]
    if labels.nunique() < 2:
        what = "class" if contract.classes else "target value"
        raise GoldenSetError(f"the source {source_name} holds a single {what}: a golden set needs more than one")
    rows = source[contract.column_names]
    if len(rows) > max_rows:
        rows = rows.sample(n=max_rows, random_state=seed).sort_index()
    write_frame(rows.reset_index(drop=True), rows_path)
    task = task_of(contract)
    summary = task.target_summary(task.encode(rows[contract.target]))
    manifest = {"rows": int(len(rows)), "sha256": sha256_of(rows_path), "source": source_name,
                **({"positive_share": summary["positive_share"]} if contract.is_binary else {"target": summary}),
                "frozen_at": utc_now(), "frozen_by": who, "reason": reason,
                "replaced": [] if previous is None else [*previous.pop("replaced", []), previous]}
    write_json(manifest_path, manifest)
    logger.info("golden set frozen: %d rows from %s, sha256 %s, by %s (%s)", manifest["rows"], source_name,
                manifest["sha256"], who, reason or "no reason given")
    return manifest


def _who() -> str:
    return os.environ.get("GIT_AUTHOR_NAME") or os.environ.get("USER") or "unknown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands of ``mlops-template golden``: ``freeze`` and ``show``."""
    commands = parser.add_subparsers(dest="command", required=True)
    frozen = commands.add_parser("freeze", help="fix the golden set from the current test split (or --source)")
    frozen.add_argument("--source", default=str(paths.TEST), help="parquet or CSV with the contract's columns")
    frozen.add_argument("--max-rows", type=int, default=None, help="default: evaluate.golden_max_rows")
    frozen.add_argument("--reason", default="", help="why (required with --replace); kept in the manifest")
    frozen.add_argument("--replace", action="store_true", help="replace an existing golden set")
    frozen.add_argument("--no-dvc", action="store_true", help="do not run `dvc add` on the rows")
    commands.add_parser("show", help="print the manifest")


def handle(args: argparse.Namespace) -> int:
    """Fix the golden set (and ``dvc add`` it) or show it; a refused freeze raises GoldenSetError."""
    from mlops_template.core.contract import load_contract
    from mlops_template.core.params import load as load_params

    if args.command == "show":
        print(MANIFEST.read_text(encoding="utf-8") if MANIFEST.exists() else "no golden set frozen yet")
        return ExitCode.OK
    source = Path(args.source)
    if not source.is_file():
        raise UserError(f"--source {source}: no such file")
    params = load_params()
    contract = load_contract(params.data.contract)
    frame = pd.read_csv(source) if source.suffix in (".csv", ".gz") else pd.read_parquet(source)
    manifest = freeze(frame, contract, args.max_rows or params.evaluate.golden_max_rows,
                      params.featurize.seed, args.reason, _who(), str(source), replace=args.replace)
    if not args.no_dvc:
        proc = subprocess.run([sys.executable, "-m", "dvc", "add", str(ROWS)], capture_output=True, text=True)
        if proc.returncode != 0:
            logger.error("dvc add %s failed: %s", ROWS, proc.stderr.strip())
            return ExitCode.FAILED
    print(f"golden set: {manifest['rows']} rows from {manifest['source']}, sha256 {manifest['sha256']}; "
          f"commit {MANIFEST} and {ROWS}.dvc (and `dvc push` the rows)")
    return ExitCode.OK
