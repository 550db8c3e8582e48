"""Plot data for DVC, per task: plain lists of dicts with no NaN or Infinity (DVC refuses them).

The evaluate stage writes one JSON file per name of :data:`PLOT_NAMES` under ``metrics/plots/``
for every task; dvc.yaml declares each with its template. A plot that does not apply to the task
is written as ``[]``, which ``dvc plots show`` skips, so the stage's outputs are the same for
every task and the HTML (``make plots``) shows only the task's own plots:

- binary: ``roc``, ``precision_recall``, ``calibration``, ``confusion`` (at the decision threshold);
- multiclass: ``confusion`` (K x K, of the most probable class) and ``calibration_by_class`` (one
  reliability curve per class, one-vs-rest; the ``by_class`` template in ``.dvc/plots`` colours them);
- regression: ``predicted_actual`` and ``residuals`` (at most :data:`MAX_POINTS` rows each).

No plot grows with the test set (the files are git-tracked, and the Dask engine's test sets are
big): curves are thinned, calibration is binned and the confusion matrix is one row per cell.
"""

from __future__ import annotations

import numpy as np

from mlops_template.pipeline import evaluation as ev

PLOT_NAMES = ("roc", "precision_recall", "calibration", "confusion", "calibration_by_class", "predicted_actual",
              "residuals")
MAX_POINTS = 2000


def _all(**own: list[dict]) -> dict[str, list[dict]]:
    unknown = set(own) - set(PLOT_NAMES)
    if unknown:
        raise ValueError(f"unknown plots {sorted(unknown)}")
    return {name: own.get(name, []) for name in PLOT_NAMES}


def binary(labels: np.ndarray, proba: np.ndarray, threshold: float, names: tuple[str, str]) -> dict[str, list[dict]]:
    """ROC, precision-recall, calibration, and the confusion rows (``names``: negative, positive)."""
    return _all(roc=ev.roc_points(labels, proba), precision_recall=ev.pr_points(labels, proba),
                calibration=ev.calibration_points(labels, proba),
                confusion=ev.confusion_rows(labels, proba, threshold, labels=names))


def multiclass(labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]) -> dict[str, list[dict]]:
    """The confusion matrix of the most probable class (:func:`~mlops_template.pipeline.evaluation.confusion_cells`),
    and per-class calibration bins."""
    y = np.asarray(labels, dtype="int64")
    p = np.asarray(proba, dtype="float64")
    if p.ndim != 2 or p.shape != (len(y), len(classes)) or not np.isfinite(p).all():
        raise ValueError(f"proba must be finite, shaped ({len(y)}, {len(classes)}), got {p.shape}")
    confusion = ev.confusion_cells(y, p.argmax(axis=1), classes)
    calibration = [{"class": name, **row} for k, name in enumerate(classes)
                   for row in ev.calibration_points((y == k).astype("int64"), np.clip(p[:, k], 0.0, 1.0))]
    return _all(confusion=confusion, calibration_by_class=calibration)


def regression(labels: np.ndarray, predicted: np.ndarray) -> dict[str, list[dict]]:
    """Predicted against actual and residual (actual minus predicted) against predicted, evenly thinned."""
    y = np.asarray(labels, dtype="float64")
    pred = np.asarray(predicted, dtype="float64")
    if y.shape != pred.shape or y.ndim != 1 or not (np.isfinite(y).all() and np.isfinite(pred).all()):
        raise ValueError(f"labels {y.shape} and predictions {pred.shape} must be finite and of one length")
    keep = ev.downsample(len(y), MAX_POINTS)
    return _all(predicted_actual=[{"actual": ev.rounded(y[i]), "predicted": ev.rounded(pred[i])} for i in keep],
                residuals=[{"predicted": ev.rounded(pred[i]), "residual": ev.rounded(y[i] - pred[i])} for i in keep])
