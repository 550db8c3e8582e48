"""The guard's marginal checks: row keys, duplicates, invalid rows, label share, PSI and TVD.

PSI bins come from the accepted data. A value holding at least a tenth (``1/PSI_BINS``) of a
column's known values (the zeros of ``capital_gain``, a sentinel, the codes of a small integer
scale) gets a bin of its own; the other values are cut at their quantiles into the remaining
bins, and missing values have their own bin. Plain deciles would collapse under such a point
mass (with 92% zeros every decile edge is 0) and read PSI 0 however far the non-zero share
moved; a continuous column has no point mass and keeps its deciles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.pipeline.validation import FAILED_CHECKS_COLUMN

DUPLICATE_CHECK = "row:duplicate"
MISSING = "<missing>"
PSI_BINS = 10
PSI_FLOOR = 1e-4  # empty bins would make PSI infinite


def positive_share(labels: pd.Series, positive: str) -> float:
    """Share of non-missing labels equal to the positive class (NaN when there are none)."""
    labels = labels.dropna().astype(str)
    return float((labels == positive).mean()) if len(labels) else float("nan")


def row_keys(frame: pd.DataFrame, contract: Contract, columns: Sequence[str] | None = None) -> pd.Series:
    """One hash per row, equal for equal rows whether ``frame`` holds raw strings or typed values.

    Numeric columns are compared as numbers ("39" equals 39), everything else as text.
    ``columns`` keys the rows by those contract columns only (default: every column, the
    label included): without the label, rows that differ only in it share a key.
    """
    canonical = {}
    wanted = set(contract.column_names if columns is None else columns)
    for column in (c for c in contract.columns if c.name in wanted):
        values = frame[column.name]
        if column.type in ("int", "float"):
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
            canonical[column.name] = numbers
            unparsed = numbers.isna() & values.notna()
            if unparsed.any():  # text in a numeric column (an invalid row): keep it apart from missing
                canonical[f"{column.name} (text)"] = values.astype(object).where(unparsed, "")
        else:
            canonical[column.name] = values.astype(object).where(values.notna(), MISSING).astype(str)
    return pd.util.hash_pandas_object(pd.DataFrame(canonical, index=frame.index), index=False)


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
