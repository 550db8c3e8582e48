"""Binary classification: a positive class, its probability, and a decision threshold.

The threshold is chosen by the evaluate stage to maximise ``evaluate.value_matrix`` (see
:mod:`mlops_template.pipeline.evaluation`); the service answers the positive class at or above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlops_template.core.boosting import LightGBMModel
from mlops_template.core.tasks.base import Task, answer_field, rounded

CLASSIFIERS: dict[str, type] = {
    "linear": LogisticRegression,
    "logistic_regression": LogisticRegression,  # the name params.yaml used before tasks other than binary
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "lightgbm": LightGBMModel,  # objective set by the task (Task.estimator)
}


def checked_arrays(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as an int 0/1 array and scores as a float array, checked to match."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype="float64")
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true and proba must be 1-d and of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("y_true and proba are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (or booleans)")
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("proba must hold finite probabilities in [0, 1]")
    return y.astype("int64"), p


def score_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict:
    """Standard metrics at a decision threshold (positive when ``proba >= threshold``).

    Ranking metrics (roc_auc, pr_auc) are None when the labels hold a single class, since they
    are undefined there; every other value is a plain float or int rounded to 6 decimals.
    """
    y, p = checked_arrays(y_true, proba)
    pred = (p >= threshold).astype("int64")
    ranked = 0 < int(y.sum()) < len(y)
    return {
        "roc_auc": rounded(skm.roc_auc_score(y, p)) if ranked else None,
        "pr_auc": rounded(skm.average_precision_score(y, p)) if ranked else None,
        "f1": rounded(skm.f1_score(y, pred, zero_division=0)),
        "accuracy": rounded(skm.accuracy_score(y, pred)),
        "precision": rounded(skm.precision_score(y, pred, zero_division=0)),
        "recall": rounded(skm.recall_score(y, pred, zero_division=0)),
        "log_loss": rounded(skm.log_loss(y, p, labels=[0, 1])),
        "positive_rate": rounded(y.mean()),
        "n": int(len(y)),
    }


def positive_column(classes: Any, positive: str) -> int:
    """Column of ``predict_proba`` that holds the positive class (string or 0/1 targets)."""
    as_text = [str(c) for c in classes]
    if positive in as_text:
        return as_text.index(positive)
    if set(as_text) <= {"0", "1", "False", "True"} and len(as_text) == 2:
        return 1
    raise ValueError(f"model classes {as_text} do not include {positive!r}")


class BinaryTask(Task):
    """Yes or no: the positive class's probability, thresholded for the served label."""

    name: ClassVar[str] = "binary"
    primary_metric: ClassVar[str] = "roc_auc"
    primary_direction: ClassVar[str] = "higher_is_better"
    estimators: ClassVar[dict[str, type]] = CLASSIFIERS
    headline_metrics: ClassVar[tuple[str, ...]] = ("roc_auc", "log_loss", "accuracy")
    live_metrics: ClassVar[dict[str, str]] = {"roc_auc": "higher_is_better", "value_per_row": "higher_is_better"}

    def __init__(self, target: str, classes: tuple[str, ...] = (), positive: str | None = None) -> None:
        if positive is None:
            raise ValueError("a binary task needs its positive class")
        super().__init__(target, classes, positive)
        self.positive_label = str(positive)

    @property
    def negative(self) -> str:
        """The label of a negative answer: the other class, else ``not <positive>``."""
        others = [c for c in self.classes if c != self.positive]
        return others[0] if len(others) == 1 else f"not {self.positive}"

    def encode(self, target: pd.Series) -> np.ndarray:
        """1 for the positive class, 0 for anything else."""
        return (target.astype(str) == str(self.positive)).to_numpy(dtype="int64")

    def decode(self, labels: np.ndarray) -> list[Any]:
        """0/1 back to the negative and positive labels."""
        return np.where(np.asarray(labels) == 1, self.positive_label, self.negative).tolist()

    def predict(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """The positive class's probability per row."""
        return model.predict_proba(features)[:, self.positive_index(model.classes_)]

    def positive_index(self, classes: Any) -> int:
        """Column of ``predict_proba`` holding the positive class: 1 for a model fitted on the 0/1
        labels :meth:`encode` gives, else the positive label's own column (a model fitted on the
        contract's labels, as packages served before tasks may be)."""
        as_text = [str(c) for c in classes]
        if self.positive_label in as_text and not set(as_text) <= {"0", "1"}:
            return as_text.index(self.positive_label)
        return positive_column(classes, "1")

    def target_summary(self, labels: np.ndarray) -> dict[str, Any]:
        """The training positive share (what the prior-only baseline predicts)."""
        return {"positive_share": rounded(float(np.mean(labels)))}

    def metrics(self, labels: np.ndarray, output: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
        """Ranking, calibration and decision metrics at ``threshold``."""
        return score_metrics(labels, output, threshold)

    def gate_thresholds(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Log loss 5% below the prior's and ROC AUC 0.05 above its 0.5; ROC AUC at most 0.005 below the champion's."""
        return {"baseline_thresholds": {"log_loss": {"direction": "lower_is_better", "relative": -0.05},
                                        "roc_auc": {"direction": "higher_is_better", "absolute": 0.05}},
                "change_thresholds": {"roc_auc": {"direction": "higher_is_better", "absolute": -0.005}}}

    def value_params(self) -> dict[str, Any]:
        """A value matrix worth 1 per correct decision (the threshold then maximises accuracy)."""
        return {"value_matrix": {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0}}

    def baseline_output(self, summary: Mapping[str, Any], rows: int) -> np.ndarray:
        """The training positive share for every row."""
        return np.full(rows, float(summary["positive_share"]))

    def answers(self, output: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        """``probability`` and the thresholded ``label`` per row."""
        cut = 0.5 if threshold is None else threshold
        labels = np.where(output >= cut, self.positive_label, self.negative)
        return [{"probability": p, "label": lab} for p, lab in zip(output.tolist(), labels.tolist(), strict=True)]

    def output_of_answers(self, answers: pd.DataFrame) -> np.ndarray:
        """The logged ``probability`` of each answer."""
        return answer_field(answers, "probability").to_numpy(dtype="float64")
