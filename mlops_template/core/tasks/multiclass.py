"""Multiclass classification: one of K classes, with a probability for each.

Labels are class indices in the contract's class order, so every model, metric and answer lists
the classes the same way, whatever order sklearn fitted them in and even when a class is absent
from one training set (its probability is then 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops_template.core.tasks.base import Task, answer_field, rounded
from mlops_template.core.tasks.binary import CLASSIFIERS  # the same estimators answer any number of classes

EPSILON = 1e-15


class MulticlassTask(Task):
    """One of K classes: a probability per class; the answer is the most probable class."""

    name: ClassVar[str] = "multiclass"
    primary_metric: ClassVar[str] = "log_loss"
    primary_direction: ClassVar[str] = "lower_is_better"
    estimators: ClassVar[dict[str, type]] = CLASSIFIERS

    def __init__(self, target: str, classes: tuple[str, ...] = (), positive: str | None = None,
                 decision_values: Any = None) -> None:
        """``decision_values``: ``evaluate.class_values`` as a K x K table (actual row, answered column),
        as evaluate chose and the package ships it; the answer is then the class of highest expected
        value under the probabilities, not merely the most probable one."""
        super().__init__(target, classes, positive)
        self.decision_values = None
        if decision_values is not None:
            table = np.asarray(decision_values, dtype="float64")
            if table.shape != (len(classes), len(classes)) or not np.isfinite(table).all():
                raise ValueError(f"decision values must be a finite {len(classes)} x {len(classes)} table, "
                                 f"got shape {table.shape}")
            self.decision_values = table

    def decide(self, output: np.ndarray) -> np.ndarray:
        """The index of each row's answer: the most probable class, or with :attr:`decision_values` the
        class whose expected value ``sum_a p(a) * value[a, answer]`` is highest."""
        proba = np.asarray(output, dtype="float64")
        return (proba if self.decision_values is None else proba @ self.decision_values).argmax(axis=1)
    headline_metrics: ClassVar[tuple[str, ...]] = ("log_loss", "accuracy", "macro_f1")
    live_metrics: ClassVar[dict[str, str]] = {"accuracy": "higher_is_better", "macro_f1": "higher_is_better"}

    def encode(self, target: pd.Series) -> np.ndarray:
        """The index of each row's class in :attr:`classes` (ValueError on a class not listed)."""
        index = {c: i for i, c in enumerate(self.classes)}
        text = target.astype(str)
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"target {self.target!r} holds {unknown[:5]}, not among the classes {list(self.classes)}")
        return text.map(index).to_numpy(dtype="int64")

    def decode(self, labels: np.ndarray) -> list[Any]:
        """Class indices back to class names."""
        return [self.classes[int(i)] for i in np.asarray(labels)]

    def predict(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """Probabilities, one column per class of :attr:`classes` (0 for a class the model never saw)."""
        fitted = model.predict_proba(features)
        out = np.zeros((len(fitted), len(self.classes)))
        out[:, np.asarray(model.classes_, dtype="int64")] = fitted
        return out

    def target_summary(self, labels: np.ndarray) -> dict[str, Any]:
        """Each class's share of the training rows (the class-prior baseline predicts these)."""
        counts = np.bincount(np.asarray(labels, dtype="int64"), minlength=len(self.classes))
        shares = counts / max(len(labels), 1)
        return {"class_shares": {c: rounded(s) for c, s in zip(self.classes, shares, strict=True)}}

    def metrics(self, labels: np.ndarray, output: np.ndarray) -> dict[str, Any]:
        """Log loss, accuracy, macro-F1, balanced accuracy, macro one-vs-rest ROC AUC, per-class P/R."""
        y = np.asarray(labels, dtype="int64")
        proba = np.clip(np.asarray(output, dtype="float64"), EPSILON, 1.0)
        proba = proba / proba.sum(axis=1, keepdims=True)
        pred = proba.argmax(axis=1)
        every = list(range(len(self.classes)))
        present = np.unique(y)
        auc = None
        if len(present) > 1:  # one-vs-rest over the classes present; a class absent from y has no AUC
            auc = rounded(np.mean([skm.roc_auc_score(y == k, proba[:, k]) for k in present]))
        precision, recall, _, support = skm.precision_recall_fscore_support(
            y, pred, labels=every, zero_division=0)
        return {
            "log_loss": rounded(skm.log_loss(y, proba, labels=every)),
            "accuracy": rounded(skm.accuracy_score(y, pred)),
            "macro_f1": rounded(skm.f1_score(y, pred, labels=every, average="macro", zero_division=0)),
            "balanced_accuracy": rounded(skm.recall_score(y, pred, labels=list(present), average="macro",
                                                          zero_division=0)),
            "roc_auc_ovr": auc,
            "per_class": {c: {"precision": rounded(p), "recall": rounded(r), "support": int(s)}
                          for c, p, r, s in zip(self.classes, precision, recall, support, strict=True)},
            "n": int(len(y)),
        }

    def baseline_output(self, summary: Mapping[str, Any], rows: int) -> np.ndarray:
        """The training class shares for every row."""
        shares = np.array([float(summary["class_shares"][c]) for c in self.classes])
        return np.tile(shares, (rows, 1))

    def answers(self, output: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        """The decided class (:meth:`decide`) as ``label`` and every class's probability."""
        best = self.decide(output)
        return [{"label": self.classes[int(b)], "probabilities": dict(zip(self.classes, row.tolist(), strict=True))}
                for b, row in zip(best, output, strict=True)]

    def output_of_answers(self, answers: pd.DataFrame) -> np.ndarray:
        """The logged ``probabilities`` of each answer, one column per class of :attr:`classes`."""
        rows = answer_field(answers, "probabilities").tolist()
        missing = sorted({c for row in rows for c in self.classes if c not in row})
        if missing:
            raise ValueError(f"logged probabilities lack the classes {missing[:5]} of {list(self.classes)}")
        return np.array([[float(row[c]) for c in self.classes] for row in rows], dtype="float64").reshape(
            len(rows), len(self.classes))

    def watched_prediction(self, output: np.ndarray) -> pd.Series:
        """The answered class of each row (the prediction monitor compares class shares)."""
        return pd.Series(self.decode(np.asarray(output).argmax(axis=1)), dtype="str")
