"""Bad-batch guard: decide whether a new batch of labelled data may join ``data/raw``.

How new data arrives
--------------------
A batch is one CSV file (``.csv`` or ``.csv.gz``) with a header line and every contract column,
the target included (labelled data). Drop it into ``data/incoming/``, or pass a file or folder to
``python -m mlops_template retrain --incoming PATH``. The file name becomes the batch's name in
``data/raw/``, which the validate stage reads in name order, so give batches unique, sortable
names such as ``2026-11-26-crm-export.csv.gz``.

The checks (:mod:`mlops_template.ops.guard`)
--------------------------------------------
Each batch is compared with the data already accepted (the rows of ``data/raw`` that pass the
contract, plus batches accepted earlier in the same run) and, pooled with everything accepted
since, with the fixed reference window (the raw data present when the guard first ran). Marginal
checks: ``rows``, ``invalid``, ``duplicates``, ``label_shift``, ``drift``; joint checks:
``label_by_group``, ``trigger``, ``label_flips``, ``near_duplicates``; cumulative checks against
the window: ``cumulative_label_by_group``, ``cumulative_label_given_inputs`` (each group's labels
against what a model of the window predicts from the same rows' inputs: the boiling frog),
``cumulative_trigger``, ``cumulative_drift``.
Thresholds live in ``params.yaml`` under ``ingest:``. A passing check close to its limit is a
warning in the report and in the log.

What happens to a batch
-----------------------
Accepted: copied into ``data/raw/`` under a temporary name and hard-linked to its final name
(atomic, and never overwrites an existing batch), then removed from the incoming folder; its
report goes to ``<ingest.reports>/<name>.report.json`` (default ``metrics/ingest/``, tracked by
git and committed by ``retrain --commit`` with the rest of ``metrics/``), an audit trail of what
joined the training data and how close it came to a limit.
Rejected: moved to ``data/quarantine/batches/<name>`` with ``<name>.report.json`` beside it;
training goes on without it.
Both reports hold every check, one line per failed check under ``reasons``, the near-limit
warnings under ``warnings`` (and the names of those checks under ``near_limit``), the cumulative
drift against the window under ``cumulative``, and the batch's ``provenance``: file name, size,
sha256, where it came from, when, by which command and by whom (git ``user.name``, else
``$USER``).
"""

from __future__ import annotations

import getpass
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.core import paths
from mlops_template.core.contract import Contract, read_raw_csv
from mlops_template.core.io import sha256_of, utc_now, write_json
from mlops_template.ops.guard import Accepted, check_batch, load_accepted, reference_window
from mlops_template.ops.guard.accepted import describe_file
from mlops_template.pipeline.validation import RAW_SUFFIXES, DataValidationError

logger = logging.getLogger(__name__)

REPORTS = paths.INGEST_REPORTS  # default of ingest.reports: reports of accepted batches


# --- provenance -----------------------------------------------------------------------------

def who() -> str:
    """The person ingesting: git's ``user.name`` here, else ``$USER``, else the login name."""
    try:
        proc = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return "unknown"


def this_command() -> str:
    """The command line of this process, as a person would type it."""
    return shlex.join(["python", *sys.argv]) if sys.argv and sys.argv[0] else "python"


def provenance(batch: Path, command: str) -> dict[str, Any]:
    """What a report records about where a batch came from: file, size, sha256, when, how, who."""
    file = describe_file(batch)
    return {"file": file["name"], "source": str(batch), "bytes": file["bytes"], "sha256": file["sha256"],
            "ingested_at": utc_now(), "command": command, "user": who()}


# --- files ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """Where one incoming batch went."""

    batch: str
    status: str  # accepted | quarantined | skipped (already in data/raw, same content)
    path: str
    rows: int
    reasons: list[str]


def incoming_batches(path: str | Path) -> list[Path]:
    """Batch files at ``path``: the file itself, or a folder's CSV files in name order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(RAW_SUFFIXES))


def _free_path(directory: Path, name: str) -> Path:
    """``directory/name``, or a timestamped variant when that name is taken."""
    target = directory / name
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = directory / f"{stamp}-{name}"
    return target


def accept(batch: Path, raw_dir: Path) -> Path:
    """Copy ``batch`` into ``raw_dir`` atomically under its own name, then drop it from incoming.

    The copy is written under a hidden temporary name (not a ``.csv`` suffix, so the validate
    stage never reads it) and hard-linked to the final name, which fails instead of overwriting.
    """
    final = raw_dir / batch.name
    tmp = raw_dir / f".{batch.name}.incoming.tmp"
    shutil.copyfile(batch, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    try:
        os.link(tmp, final)
    finally:
        tmp.unlink()
    batch.unlink()
    return final


def quarantine(batch: Path, quarantine_dir: Path, report: dict[str, Any]) -> Path:
    """Move ``batch`` to ``quarantine_dir`` with its JSON report beside it."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = _free_path(quarantine_dir, batch.name)
    write_json(target.with_name(target.name + ".report.json"), report)
    shutil.move(batch, target)
    return target


def reports_folder(thresholds: dict[str, Any]) -> Path:
    """Where reports of accepted batches go: ``ingest.reports``, ``metrics/ingest`` by default."""
    return Path(thresholds.get("reports") or REPORTS)


def _quarantine_unread(batch: Path, quarantine_dir: Path, reason: str, origin: dict[str, Any]) -> Outcome:
    report = {"batch": batch.name, "accepted": False, "reasons": [reason], "warnings": [], "near_limit": [],
              "provenance": origin, "checks": []}
    target = quarantine(batch, quarantine_dir, report)
    logger.warning("quarantined %s -> %s: %s", batch.name, target, reason)
    return Outcome(batch.name, "quarantined", str(target), 0, report["reasons"])


def ingest_batch(
    batch: Path, raw_dir: Path, quarantine_dir: Path, accepted: Accepted,
    contract: Contract, thresholds: dict[str, Any], reports_dir: str | Path | None = None,
    model_columns: Sequence[str] | None = None, command: str | None = None,
) -> tuple[Outcome, Accepted]:
    """Guard one batch: into ``raw_dir`` if it passes, to quarantine with a report if not.

    An accepted batch's report goes to ``reports_dir`` (default :func:`reports_folder`) as
    ``<name>.report.json``, written after the batch is in ``raw_dir`` so that no report claims
    a batch that is not there. Near-limit warnings are logged either way. ``model_columns``:
    the contract columns the model reads (see :func:`mlops_template.ops.guard.check_batch`);
    ``command``: the command line recorded in the report's provenance (default: this process's).
    """
    reports_dir = Path(reports_dir) if reports_dir is not None else reports_folder(thresholds)
    origin = provenance(batch, command or this_command())
    existing = raw_dir / batch.name
    if existing.exists():
        if sha256_of(existing) == origin["sha256"]:  # accepted before a crash; only the cleanup is left
            batch.unlink()
            logger.info("%s is already in %s; removed the incoming copy", batch.name, raw_dir)
            return Outcome(batch.name, "skipped", str(existing), 0, ["already ingested"]), accepted
        reason = f"name: a different batch named {batch.name} is already in {raw_dir}"
        return _quarantine_unread(batch, quarantine_dir, reason, origin), accepted
    try:
        raw = read_raw_csv(batch, contract)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        return _quarantine_unread(batch, quarantine_dir, f"read: not a readable CSV: {exc}", origin), accepted
    report, valid = check_batch(batch.name, raw, accepted, contract, thresholds, model_columns)
    report.provenance = origin
    for line in report.warnings:
        logger.warning("%s: near a limit: %s", batch.name, line)
    if not report.accepted:
        target = quarantine(batch, quarantine_dir, report.to_dict())
        logger.warning("quarantined %s -> %s: %s", batch.name, target, "; ".join(report.reasons))
        return Outcome(batch.name, "quarantined", str(target), report.rows, report.reasons), accepted
    final = accept(batch, raw_dir)
    report_path = reports_dir / f"{final.name}.report.json"
    write_json(report_path, report.to_dict())
    logger.info("accepted %s (%d rows) into %s; report %s%s", batch.name, report.rows, final, report_path,
                f", {len(report.warnings)} warning(s)" if report.warnings else "")
    return Outcome(batch.name, "accepted", str(final), report.rows, []), accepted.extend(valid, contract)


def ingest(
    incoming: str | Path, raw_dir: str | Path, quarantine_dir: str | Path,
    contract: Contract, thresholds: dict[str, Any], reports_dir: str | Path | None = None,
    model_columns: Sequence[str] | None = None, command: str | None = None,
) -> list[Outcome]:
    """Guard every incoming batch in name order; each accepted batch joins the reference.

    Reports of accepted batches go to ``reports_dir``, by default ``thresholds["reports"]``
    (``ingest.reports``) or ``metrics/ingest`` when that key is absent; the reference window's
    record (``reference-window.json``) lives there too and is written on first use.
    """
    reports_dir = Path(reports_dir) if reports_dir is not None else reports_folder(thresholds)
    batches = incoming_batches(incoming)
    if not batches:
        return []
    raw_dir, quarantine_dir = Path(raw_dir), Path(quarantine_dir)
    if not raw_dir.is_dir():
        raise DataValidationError(f"data.raw must be a folder of batches to ingest into, got {raw_dir}")
    command = command or this_command()
    window = reference_window(raw_dir, reports_dir, contract, {"command": command, "user": who()})
    accepted = load_accepted(raw_dir, contract, window)
    outcomes = []
    for batch in batches:
        outcome, accepted = ingest_batch(batch, raw_dir, quarantine_dir, accepted, contract, thresholds,
                                         reports_dir, model_columns, command)
        outcomes.append(outcome)
    return outcomes
