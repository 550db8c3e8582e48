"""Bad-batch guard: decide whether a new batch of labelled data may join ``data/raw``.

How new data arrives
--------------------
A batch is one CSV file (``.csv`` or ``.csv.gz``) with a header line and every contract column,
the target included (labelled data). Drop it into ``data/incoming/``, or pass a file or folder to
``python -m mlops_template.retrain --incoming PATH``. The file name becomes the batch's name in
``data/raw/``, which the validate stage reads in name order, so give batches unique, sortable
names such as ``2026-11-26-crm-export.csv.gz``.

The checks
----------
Each batch is compared with the data already accepted (the rows of ``data/raw`` that pass the
contract, plus batches accepted earlier in the same run). Thresholds live in ``params.yaml``
under ``ingest:``; a check fails when its value is above its threshold (``min_rows``: below).

- ``rows``: the batch has at least ``min_rows`` rows (fewer cannot be judged).
- ``invalid``: share of rows failing the contract (``validate_frame``; duplicates excluded).
- ``duplicates``: share of rows repeated within the batch or already accepted.
- ``label_shift``: absolute difference of the positive-class share.
- ``drift``: number of drifted columns; a numeric column drifts when its PSI (:func:`psi`)
  exceeds ``max_psi``, a categorical one when its total-variation distance exceeds ``max_tvd``.
  More than ``max_drifted_columns`` drifted columns fails the batch.

PSI bins come from the accepted data. A value holding at least a tenth (``1/PSI_BINS``) of a
column's known values (the zeros of ``capital_gain``, a sentinel, the codes of a small integer
scale) gets a bin of its own; the other values are cut at their quantiles into the remaining
bins, and missing values have their own bin. Plain deciles would collapse under such a point
mass (with 92% zeros every decile edge is 0) and read PSI 0 however far the non-zero share
moved; a continuous column has no point mass and keeps its deciles.

Near-limit warnings: a check that passes with its value at least 80% of its limit
(``min_rows``: fewer than 1.25x the minimum), a column whose PSI or TVD is at least 80% of its
limit, and every drifted column of a batch whose drift count is still allowed are listed under
``warnings`` in the report (one line each, naming the check or column, its value and the limit)
and logged with ``logger.warning``, so a batch creeping towards a limit is seen while accepted.

What happens to a batch
-----------------------
Accepted: copied into ``data/raw/`` under a temporary name and hard-linked to its final name
(atomic, and never overwrites an existing batch), then removed from the incoming folder; its
report goes to ``<ingest.reports>/<name>.report.json`` (default ``metrics/ingest/``, tracked by
git and committed by ``retrain --commit`` with the rest of ``metrics/``), an audit trail of what
joined the training data and how close it came to a limit.
Rejected: moved to ``data/quarantine/batches/<name>`` with ``<name>.report.json`` beside it;
training goes on without it.
Both reports hold every check, one line per failed check under ``reasons`` and the near-limit
warnings under ``warnings``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core import paths
from mlops_template.core.contract import Contract, read_raw_csv
from mlops_template.core.io import sha256_of, write_json
from mlops_template.pipeline.validation import (
    FAILED_CHECKS_COLUMN,
    RAW_SUFFIXES,
    DataValidationError,
    validate_file,
    validate_frame,
)

logger = logging.getLogger(__name__)

DUPLICATE_CHECK = "row:duplicate"
MISSING = "<missing>"
PSI_BINS = 10
PSI_FLOOR = 1e-4  # empty bins would make PSI infinite
NEAR_LIMIT = 0.8  # a passing value at or above this share of its limit is a warning
REPORTS = paths.INGEST_REPORTS  # default of ingest.reports: reports of accepted batches


# --- pure checks ----------------------------------------------------------------------------

def positive_share(labels: pd.Series, positive: str) -> float:
    """Share of non-missing labels equal to the positive class (NaN when there are none)."""
    labels = labels.dropna().astype(str)
    return float((labels == positive).mean()) if len(labels) else float("nan")


def row_keys(frame: pd.DataFrame, contract: Contract) -> pd.Series:
    """One hash per row, equal for equal rows whether ``frame`` holds raw strings or typed values.

    Numeric columns are compared as numbers ("39" equals 39), everything else as text.
    """
    canonical = {}
    for column in contract.columns:
        values = frame[column.name].astype("string")
        if column.type in ("int", "float"):
            numbers = pd.to_numeric(frame[column.name], errors="coerce").astype("float64")
            values = numbers.astype("string").where(numbers.notna(), values)
        canonical[column.name] = values.fillna(MISSING)
    return pd.util.hash_pandas_object(pd.DataFrame(canonical), index=False)


def duplicate_mask(batch_keys: pd.Series, accepted_keys: np.ndarray) -> pd.Series:
    """True for each row repeated earlier in the batch or already among the accepted rows."""
    return batch_keys.duplicated(keep="first") | batch_keys.isin(accepted_keys)


def invalid_share(rejected: pd.DataFrame, rows: int) -> float:
    """Share of rows that fail a contract check other than being a duplicate."""
    if not rows or rejected.empty:
        return 0.0
    checks = rejected[FAILED_CHECKS_COLUMN].astype(str).str.split("; ")
    return float(checks.map(lambda names: any(n != DUPLICATE_CHECK for n in names)).sum() / rows)


def psi_bins(known: np.ndarray, bins: int = PSI_BINS) -> tuple[np.ndarray, np.ndarray]:
    """The bins ``psi`` measures with, from the reference's non-missing values ``known``.

    Returns ``(points, edges)``: ``points`` are the values holding at least ``1/bins`` of
    ``known`` each (sorted), one bin apiece; ``edges`` are the quantile edges of the remaining
    values, which share the remaining ``bins - len(points)`` bins (at least one).
    """
    values, counts = np.unique(known, return_counts=True)
    points = values[counts * bins >= known.size]
    rest = known[~np.isin(known, points)]
    if rest.size == 0:
        return points, np.empty(0)
    quantiles = np.linspace(0, 1, max(bins - points.size, 1) + 1)[1:-1]
    return points, np.unique(np.quantile(rest, quantiles))


def psi(reference: pd.Series, current: pd.Series, bins: int = PSI_BINS) -> float:
    """Population stability index of ``current`` against bins drawn from ``reference``.

    The bins follow :func:`psi_bins`: a value carrying a point mass in the reference (at least
    ``1/bins`` of its known values: the zeros of a zero-inflated column, a sentinel, the codes
    of a small integer scale, the one value of a constant column) gets a bin of its own, and
    the other values are cut at their own quantiles into the remaining bins. Plain deciles of
    the whole column collapse under such a mass (with 92% zeros every decile edge is 0, zero
    and non-zero values share one bin, and PSI stays 0 however far the non-zero share moves).
    A continuous column has no point mass and keeps its deciles. A current value the reference
    never had falls into the quantile bin around it (or, with no other values, one extra bin).
    Missing values get a bin of their own, so a surge of nulls counts as drift. Shares are
    floored at ``PSI_FLOOR`` so an empty bin gives a large but finite term. Deterministic.
    """
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float)
    cur = pd.to_numeric(current, errors="coerce").to_numpy(dtype=float)
    known = ref[~np.isnan(ref)]
    if known.size == 0:
        return 0.0
    points, edges = psi_bins(known, bins)

    def shares(values: np.ndarray) -> np.ndarray:
        nan = np.isnan(values)
        values = values[~nan]
        at_point = np.isin(values, points)
        counts = np.concatenate([
            np.bincount(np.searchsorted(points, values[at_point]), minlength=points.size),
            np.bincount(np.searchsorted(edges, values[~at_point], side="right"), minlength=edges.size + 1),
            [nan.sum()],
        ])
        return np.clip(counts / max(nan.size, 1), PSI_FLOOR, None)

    p, q = shares(ref), shares(cur)
    return float(np.sum((q - p) * np.log(q / p)))


def total_variation(reference: pd.Series, current: pd.Series) -> float:
    """Total-variation distance between the category shares (missing is a category)."""
    p = reference.astype("string").fillna(MISSING).value_counts(normalize=True)
    q = current.astype("string").fillna(MISSING).value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * (p - q).abs().sum())


def drift_scores(
    reference: pd.DataFrame, current: pd.DataFrame, contract: Contract, max_psi: float, max_tvd: float
) -> dict[str, dict[str, Any]]:
    """PSI per numeric and TVD per categorical column, each with whether it drifted."""
    scores: dict[str, dict[str, Any]] = {}
    for name in contract.columns_with_role("numeric"):
        value = psi(reference[name], current[name])
        scores[name] = {"metric": "psi", "value": round(value, 6), "drifted": value > max_psi}
    for name in contract.columns_with_role("categorical"):
        value = total_variation(reference[name], current[name])
        scores[name] = {"metric": "tvd", "value": round(value, 6), "drifted": value > max_tvd}
    return scores


# --- the report -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One guard check: its value, the threshold it is held to, and a one-line reason."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchReport:
    """Every check run on a batch; the batch is accepted when all of them passed."""

    batch: str
    rows: int
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)  # passed, but close to a limit

    @property
    def accepted(self) -> bool:
        """True when no check failed."""
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """One line per failed check."""
        return [f"{c.name}: {c.reason}" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: beside a quarantined batch, or in ``ingest.reports`` when accepted."""
        return {"batch": self.batch, "rows": self.rows, "accepted": self.accepted,
                "reasons": self.reasons, "warnings": self.warnings,
                "checks": [asdict(c) for c in self.checks]}


@dataclass
class Accepted:
    """The accepted data a batch is compared with: typed valid rows and their row hashes."""

    frame: pd.DataFrame
    keys: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, contract: Contract) -> Accepted:
        """Wrap the validated rows of ``data/raw``."""
        return cls(frame.reset_index(drop=True), row_keys(frame, contract).to_numpy())

    def extend(self, frame: pd.DataFrame, contract: Contract) -> Accepted:
        """The accepted data plus a newly accepted batch's valid rows."""
        return Accepted.from_frame(pd.concat([self.frame, frame], ignore_index=True), contract)


def _bound(name: str, value: float, limit: float, what: str, details: dict | None = None) -> Check:
    passed = bool(value <= limit)
    verdict = "within" if passed else "above"
    return Check(name, round(value, 6), limit, passed,
                 f"{what} {value:.2%} is {verdict} the limit {limit:.2%}", details or {})


def _near(value: float, limit: float) -> bool:
    """True for a positive value at or above ``NEAR_LIMIT`` of its (upper) limit."""
    return bool(value > 0 and value >= NEAR_LIMIT * limit)


def near_limit_warnings(checks: list[Check], thresholds: dict[str, Any]) -> list[str]:
    """One line per passed check close to its limit, and per drifted or nearly drifted column.

    Close means at least ``NEAR_LIMIT`` (80%) of an upper limit, or fewer than
    ``min_rows / NEAR_LIMIT`` (1.25x) rows. Failed checks are reasons, not warnings.
    """
    lines = []
    for c in checks:
        if not c.passed or c.value is None:
            continue
        if c.name == "rows":
            if c.value < c.threshold / NEAR_LIMIT:
                lines.append(f"rows: {c.value:.0f} rows, near the minimum {c.threshold} "
                             f"(fewer than {c.threshold / NEAR_LIMIT:.0f})")
        elif c.name == "drift":
            scores = c.details.get("columns", {})
            limits = {"psi": thresholds["max_psi"], "tvd": thresholds["max_tvd"]}
            drifted = sorted(n for n, s in scores.items() if s["drifted"])
            if drifted:
                listed = ", ".join(f"{n} {scores[n]['metric']} {scores[n]['value']:.3f} > "
                                   f"{limits[scores[n]['metric']]}" for n in drifted)
                lines.append(f"drift: {len(drifted)} drifted column(s) ({listed}), "
                             f"within the limit of {c.threshold:.0f} drifted column(s)")
            for n, s in sorted(scores.items()):
                if not s["drifted"] and _near(s["value"], limits[s["metric"]]):
                    lines.append(f"drift: {n} {s['metric']} {s['value']:.3f} is near the limit "
                                 f"{limits[s['metric']]}")
        elif _near(c.value, c.threshold):
            lines.append(f"{c.name}: {c.value:.4g} is near the limit {c.threshold} "
                         f"({c.value / c.threshold:.0%} of it)")
    return lines


def check_batch(
    name: str, raw: pd.DataFrame, accepted: Accepted, contract: Contract, thresholds: dict[str, Any]
) -> tuple[BatchReport, pd.DataFrame]:
    """Run every guard check on a batch read as raw strings; return the report and valid rows.

    The report lists failed checks under ``reasons`` and passed ones close to their limit
    under ``warnings`` (:func:`near_limit_warnings`).
    """
    rows = len(raw)
    min_rows = int(thresholds["min_rows"])
    checks = [Check("rows", float(rows), min_rows, rows >= min_rows,
                    f"{rows} rows, at least {min_rows} needed to judge a batch")]
    try:
        result = validate_frame(raw, contract)
    except DataValidationError as exc:
        checks.append(Check("invalid", 1.0, thresholds["max_invalid_share"], False, str(exc)))
        return BatchReport(name, rows, checks), raw.iloc[0:0]
    valid = result.valid

    checks.append(_bound("invalid", invalid_share(result.rejected, rows), thresholds["max_invalid_share"],
                         "share of rows failing the contract",
                         {"failures_by_check": result.failures_by_check}))

    duplicates = duplicate_mask(row_keys(raw, contract), accepted.keys)
    checks.append(_bound("duplicates", float(duplicates.mean()), thresholds["max_duplicate_share"],
                         "share of duplicate rows (within the batch or already accepted)",
                         {"rows": int(duplicates.sum())}))

    batch_share = positive_share(raw[contract.target], contract.positive_class)
    accepted_share = positive_share(accepted.frame[contract.target], contract.positive_class)
    shift = abs(batch_share - accepted_share)
    limit = thresholds["max_label_shift"]
    checks.append(Check("label_shift", round(shift, 6), limit, bool(shift <= limit),
                        f"positive share {batch_share:.3f} vs {accepted_share:.3f} accepted: "
                        f"shift {shift:.3f} {'within' if shift <= limit else 'above'} the limit {limit}",
                        {"batch": round(batch_share, 6), "accepted": round(accepted_share, 6)}))

    if not valid.empty:
        scores = drift_scores(accepted.frame, valid, contract, thresholds["max_psi"], thresholds["max_tvd"])
        drifted = sorted(n for n, s in scores.items() if s["drifted"])
        limit = int(thresholds["max_drifted_columns"])
        checks.append(Check("drift", float(len(drifted)), limit, len(drifted) <= limit,
                            f"{len(drifted)} drifted column(s) {drifted}, at most {limit} allowed",
                            {"columns": scores}))
    return BatchReport(name, rows, checks, near_limit_warnings(checks, thresholds)), valid


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


def load_accepted(raw_dir: str | Path, contract: Contract) -> Accepted:
    """The valid rows of everything already in ``raw_dir``."""
    return Accepted.from_frame(validate_file(raw_dir, contract).valid, contract)


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


def ingest_batch(
    batch: Path, raw_dir: Path, quarantine_dir: Path, accepted: Accepted,
    contract: Contract, thresholds: dict[str, Any], reports_dir: str | Path | None = None,
) -> tuple[Outcome, Accepted]:
    """Guard one batch: into ``raw_dir`` if it passes, to quarantine with a report if not.

    An accepted batch's report goes to ``reports_dir`` (default :func:`reports_folder`) as
    ``<name>.report.json``, written after the batch is in ``raw_dir`` so that no report claims
    a batch that is not there. Near-limit warnings are logged either way.
    """
    reports_dir = Path(reports_dir) if reports_dir is not None else reports_folder(thresholds)
    existing = raw_dir / batch.name
    if existing.exists():
        if sha256_of(existing) == sha256_of(batch):  # accepted before a crash; only the cleanup is left
            batch.unlink()
            logger.info("%s is already in %s; removed the incoming copy", batch.name, raw_dir)
            return Outcome(batch.name, "skipped", str(existing), 0, ["already ingested"]), accepted
        report = {"batch": batch.name, "accepted": False,
                  "reasons": [f"name: a different batch named {batch.name} is already in {raw_dir}"],
                  "warnings": [], "checks": []}
        target = quarantine(batch, quarantine_dir, report)
        return Outcome(batch.name, "quarantined", str(target), 0, report["reasons"]), accepted
    try:
        raw = read_raw_csv(batch, contract)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        report = {"batch": batch.name, "accepted": False, "reasons": [f"read: not a readable CSV: {exc}"],
                  "warnings": [], "checks": []}
        target = quarantine(batch, quarantine_dir, report)
        return Outcome(batch.name, "quarantined", str(target), 0, report["reasons"]), accepted
    report, valid = check_batch(batch.name, raw, accepted, contract, thresholds)
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
) -> list[Outcome]:
    """Guard every incoming batch in name order; each accepted batch joins the reference.

    Reports of accepted batches go to ``reports_dir``, by default ``thresholds["reports"]``
    (``ingest.reports``) or ``metrics/ingest`` when that key is absent.
    """
    reports_dir = Path(reports_dir) if reports_dir is not None else reports_folder(thresholds)
    batches = incoming_batches(incoming)
    if not batches:
        return []
    raw_dir, quarantine_dir = Path(raw_dir), Path(quarantine_dir)
    if not raw_dir.is_dir():
        raise DataValidationError(f"data.raw must be a folder of batches to ingest into, got {raw_dir}")
    accepted = load_accepted(raw_dir, contract)
    outcomes = []
    for batch in batches:
        outcome, accepted = ingest_batch(batch, raw_dir, quarantine_dir, accepted, contract, thresholds,
                                         reports_dir)
        outcomes.append(outcome)
    return outcomes
