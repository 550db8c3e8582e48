"""Scoring a binary classifier: metrics, business value, slices and plot data for DVC.

Most of it is pure computation on arrays (labels as 0/1, scores as positive-class
probabilities) so the evaluate stage, notebooks and tests share it; the stage's own work
(candidate, baseline and champion scored, then the gate) is :mod:`mlops_template.pipeline.assessment`,
and how every task (binary through these functions) is scored is :mod:`mlops_template.pipeline.scoring`.
Plot data is plain lists of dicts with no NaN or Infinity, because DVC refuses plot JSON that
holds them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from mlops_template.core.tasks.binary import checked_arrays as _as_arrays
from mlops_template.core.tasks.binary import score_metrics

logger = logging.getLogger(__name__)

DECIMALS = 6
MISSING_KEY = "<missing>"
VALUE_KEYS = ("tp", "fp", "tn", "fn")


def rounded(value: float) -> float:
    """A figure as the JSON files carry it: a plain float rounded to 6 decimals."""
    return round(float(value), DECIMALS)


_round = rounded


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def baseline_metrics(y_true: np.ndarray, prior: float, value_matrix: Mapping[str, float]) -> dict:
    """Metrics of the prior-only model: it predicts ``prior`` (the training positive share) for all.

    It knows the base rate and nothing else, so any model worth serving must beat it on the same
    test set, whatever the dataset: its ROC AUC is 0.5 and its log loss is the labels' entropy
    under ``prior``. The gate's baseline thresholds compare against these figures.
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"the training positive share must lie strictly between 0 and 1, got {prior}")
    y, _ = _as_arrays(y_true, np.zeros(len(np.asarray(y_true))))
    proba = np.full(len(y), float(prior))
    threshold, _ = best_threshold(y, proba, value_matrix)
    result = score_metrics(y, proba, threshold)
    if result["roc_auc"] is not None:
        result["roc_auc"] = 0.5  # a constant score ranks nothing; sklearn agrees, without float noise
    result.update(business_value(y, proba, threshold, value_matrix))
    result["prior"] = _round(prior)
    return result


def _check_value_matrix(value_matrix: Mapping[str, float]) -> dict[str, float]:
    missing = [k for k in VALUE_KEYS if k not in value_matrix]
    if missing:
        raise ValueError(f"value_matrix lacks {missing}; it needs all of {list(VALUE_KEYS)}")
    return {k: float(value_matrix[k]) for k in VALUE_KEYS}


def _value(tp, fp, tn, fn, values: dict[str, float]):
    """Total value of the given counts; works on scalars and arrays alike."""
    return tp * values["tp"] + fp * values["fp"] + tn * values["tn"] + fn * values["fn"]


def best_threshold(
    y_true: np.ndarray, proba: np.ndarray, value_matrix: Mapping[str, float]
) -> tuple[float, float]:
    """The threshold that maximises total value, and the value per row there.

    Candidates are the distinct scores plus 1.0 (the "contact nobody" decision when no score is
    1.0); a row is predicted positive when ``proba >= threshold``. Scores are sorted once and
    counts come from cumulative sums, so the cost is O(n log n). Ties go to the highest value,
    then to the higher threshold, which makes the answer deterministic.
    """
    y, p = _as_arrays(y_true, proba)
    values = _check_value_matrix(value_matrix)
    order = np.argsort(-p, kind="stable")
    scores, labels = p[order], y[order]
    # The last position of each run of equal scores: predicting positive down to there.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tp = np.cumsum(labels)[ends]
    fp = (ends + 1) - tp
    thresholds = scores[ends]
    if thresholds[0] < 1.0:  # add "nothing positive", the highest candidate
        tp, fp = np.insert(tp, 0, 0), np.insert(fp, 0, 0)
        thresholds = np.insert(thresholds, 0, 1.0)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    totals = _value(tp, fp, n_neg - fp, n_pos - tp, values)
    best = int(np.argmax(totals))  # first maximum = highest threshold, candidates are descending
    return float(thresholds[best]), _round(totals[best] / len(y))


def business_value(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, value_matrix: Mapping[str, float]
) -> dict:
    """Total and per-row value of deciding at ``threshold``, with the confusion counts."""
    y, p = _as_arrays(y_true, proba)
    values = _check_value_matrix(value_matrix)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    total = _value(tp, fp, tn, fn, values)
    return {
        "value_total": _round(total),
        "value_per_row": _round(total / len(y)),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def slice_groups(column: pd.Series) -> list[tuple[str, np.ndarray]]:
    """Each slice of a column, by key: the value as a string (missing values: ``<missing>``) and the
    positions of its rows. Values that print alike share a slice.

    Rows are grouped by integer codes, so a big test set costs 8 bytes a row here, not a string each.
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    members: dict[str, list[int]] = {}
    for code, value in enumerate(uniques):
        members.setdefault(str(value), []).append(code)
    if (codes < 0).any():
        members.setdefault(MISSING_KEY, []).append(-1)
    return [(key, np.flatnonzero(np.isin(codes, found))) for key, found in sorted(members.items())]


def _slice_scores(y: np.ndarray, p: np.ndarray, threshold: float, min_rows: int) -> dict:
    if len(y) < min_rows:
        return {"n": int(len(y)), "too_small": True}
    pred = (p >= threshold).astype("int64")
    return {
        "n": int(len(y)),
        "positive_rate": _round(y.mean()),
        "roc_auc": _round(metrics.roc_auc_score(y, p)) if _both_classes(y) else None,
        "accuracy": _round(metrics.accuracy_score(y, pred)),
        "f1": _round(metrics.f1_score(y, pred, zero_division=0)),
        "predicted_positive_rate": _round(pred.mean()),
    }


def slice_metrics(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    slice_columns: list[str],
    min_rows: int = 30,
) -> dict:
    """Metrics per value of each slice column, to spot groups where the model does worse.

    ``frame`` is aligned with ``y_true`` and ``proba`` by position. Slices with fewer than
    ``min_rows`` rows get only ``n`` and ``too_small: true``, since their scores would be noise.
    """
    y, p = _as_arrays(y_true, proba)
    if len(frame) != len(y):
        raise ValueError(f"frame has {len(frame)} rows but y_true has {len(y)}")
    unknown = [c for c in slice_columns if c not in frame.columns]
    if unknown:
        raise ValueError(f"slice columns not in the frame: {unknown}")
    result: dict[str, dict] = {}
    for column in slice_columns:
        result[column] = {key: _slice_scores(y[rows], p[rows], threshold, min_rows)
                          for key, rows in slice_groups(frame[column])}
    return result


def _finite_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if all(math.isfinite(v) for v in r.values())]


def roc_points(y_true: np.ndarray, proba: np.ndarray, max_points: int = 1000) -> list[dict]:
    """ROC curve as ``{fpr, tpr, threshold}`` rows, at most ``max_points`` (evenly thinned, ends kept);
    the infinite first threshold becomes 1.0.

    With a single class the curve is undefined and the result is empty.
    """
    y, p = _as_arrays(y_true, proba)
    if not _both_classes(y):
        return []
    fpr, tpr, thresholds = metrics.roc_curve(y, p, drop_intermediate=True)
    rows = [
        {"fpr": _round(fpr[i]), "tpr": _round(tpr[i]), "threshold": _round(min(thresholds[i], 1.0))}
        for i in downsample(len(fpr), max_points)
    ]
    return _finite_rows(rows)


def downsample(n: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` evenly spaced indices into ``range(n)``, first and last kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype("int64"))


def pr_points(y_true: np.ndarray, proba: np.ndarray, max_points: int = 500) -> list[dict]:
    """Precision-recall curve as ``{recall, precision, threshold}`` rows, at most ``max_points``.

    sklearn's final point (recall 0, precision 1) has no threshold; it is given 1.0. With no
    positive labels the curve is undefined and the result is empty.
    """
    y, p = _as_arrays(y_true, proba)
    if y.sum() == 0:
        return []
    precision, recall, thresholds = metrics.precision_recall_curve(y, p)
    thresholds = np.append(thresholds, 1.0)
    rows = [
        {"recall": _round(recall[i]), "precision": _round(precision[i]), "threshold": _round(thresholds[i])}
        for i in downsample(len(precision), max_points)
    ]
    return _finite_rows(rows)


def calibration_points(
    y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10, strategy: str = "uniform"
) -> list[dict]:
    """Reliability diagram data: per score bin, mean score, share of positives and row count.

    ``strategy`` is ``uniform`` (equal-width bins on [0, 1]) or ``quantile`` (equal-count bins).
    Empty bins are skipped.
    """
    y, p = _as_arrays(y_true, proba)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1)))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    bins = np.searchsorted(edges[1:-1], p, side="right")
    size = len(edges) - 1 if len(edges) > 1 else 1
    counts = np.bincount(bins, minlength=size)
    score_sums = np.bincount(bins, weights=p, minlength=size)
    positive_sums = np.bincount(bins, weights=y, minlength=size)
    return [
        {
            "mean_predicted": _round(score_sums[b] / counts[b]),
            "fraction_positive": _round(positive_sums[b] / counts[b]),
            "count": int(counts[b]),
        }
        for b in np.flatnonzero(counts)
    ]


def confusion_cells(actual: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> list[dict]:
    """The confusion matrix as ``{actual, predicted, count}`` rows, every cell (zeros too), for DVC.

    ``actual`` and ``predicted`` are class indices into ``names``. A cell per pair rather than a
    row per test row, so the plot file stays the same size however many rows are scored;
    ``.dvc/plots/confusion_counts.json`` is DVC's confusion template summing ``count``.
    """
    k = len(names)
    counts = np.bincount(np.asarray(actual, dtype="int64") * k + np.asarray(predicted, dtype="int64"),
                         minlength=k * k)
    return [{"actual": str(names[a]), "predicted": str(names[b]), "count": int(counts[a * k + b])}
            for a in range(k) for b in range(k)]


def confusion_rows(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, labels: tuple[str, str] = ("0", "1")
) -> list[dict]:
    """Binary's confusion cells at ``threshold`` (:func:`confusion_cells`); ``labels`` names the negative
    then the positive class."""
    y, p = _as_arrays(y_true, proba)
    return confusion_cells(y, (p >= threshold).astype("int64"), labels)


def assert_finite(obj: Any, path: str = "$") -> None:
    """Raise ValueError naming the path of any NaN or Infinity in nested dict/list data.

    Called before writing metric or plot JSON: ``json.dump`` would write ``NaN``, which DVC and
    most JSON parsers reject.
    """
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            assert_finite(value, f"{path}.{key}")
    elif isinstance(obj, (list, tuple, np.ndarray)):
        for index, value in enumerate(obj):
            assert_finite(value, f"{path}[{index}]")
    elif isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        raise ValueError(f"non-finite value {obj} at {path}")
