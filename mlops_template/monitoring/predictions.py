"""Drift of the model's own answers: the logged predictions against the model's on the reference.

Input drift says the inputs moved; whether the answers moved with them is what the business feels.
The watched prediction is the task's (:meth:`~mlops_template.core.tasks.Task.watched_prediction`):
binary, the positive-class probability; regression, the predicted value; multiclass, the answered
class. It is compared with the same model's predictions on the drift reference sample
(:func:`mlops_template.monitoring.model.reference_output`) by the population stability index:
numbers binned as the ingest guard bins them (deciles of the reference, a point mass in a bin of
its own), classes by their shares. A PSI above ``monitoring.prediction_psi_threshold`` (0.2 by
default: a shift worth looking at, by the usual reading of PSI) is prediction drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_template.ops.guard.marginal import PSI_FLOOR, psi

if TYPE_CHECKING:
    from mlops_template.core.tasks import Task

ALERT_KEY = "prediction_drift"


def class_psi(reference: pd.Series, current: pd.Series) -> float:
    """Population stability index of the class shares of ``current`` against ``reference``.

    A class absent on one side has its share floored at the guard's ``PSI_FLOOR``, so a new
    class gives a large but finite term.
    """
    p = reference.astype("str").value_counts(normalize=True)
    q = current.astype("str").value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    p, q = p.clip(lower=PSI_FLOOR).to_numpy(), q.clip(lower=PSI_FLOOR).to_numpy()
    return float(np.sum((q - p) * np.log(q / p)))


def describe(values: pd.Series) -> dict[str, Any]:
    """A short account of a prediction sample: mean and quartiles, or class shares."""
    if pd.api.types.is_numeric_dtype(values):
        quartiles = np.quantile(values.to_numpy(dtype="float64"), [0.25, 0.5, 0.75]).round(6).tolist()
        return {"mean": round(float(values.mean()), 6), "quartiles": quartiles}
    return {"shares": {str(k): round(float(v), 6) for k, v in values.value_counts(normalize=True).items()}}


def prediction_drift(task: Task, reference_output: np.ndarray, logged: pd.DataFrame,
                     threshold: float) -> dict[str, Any]:
    """PSI of the predictions logged in ``logged`` against ``reference_output``, and the verdict.

    ``logged`` holds inference-log records with the task's answer fields; records of another task
    (a field missing) raise ValueError naming it.
    """
    reference = task.watched_prediction(reference_output)
    current = task.watched_prediction(task.output_of_answers(logged))
    if reference.empty or current.empty:
        raise ValueError(f"need predictions on both sides: {len(current)} logged, {len(reference)} reference")
    numeric = pd.api.types.is_numeric_dtype(reference)
    score = psi(reference, current) if numeric else class_psi(reference, current)
    return {
        "compared": True,
        "watched": "value" if numeric else "class shares",
        "psi": round(score, 6),
        "threshold": threshold,
        "drift_detected": bool(score > threshold),
        "reference": describe(reference),
        "current": describe(current),
        "rows_current": len(current),
        "rows_reference": len(reference),
    }


def not_compared(reason: str, threshold: float) -> dict[str, Any]:
    """The summary when the predictions could not be compared (no model package, no reference)."""
    return {"compared": False, "reason": reason, "psi": None, "threshold": threshold, "drift_detected": False}
