"""How the evaluate stage scores each task: metrics with business value, baseline, slices, plots, answers.

One :class:`Scoring` per task, over the task's own metrics (:meth:`Task.metrics`):

- **binary** keeps what the pipeline always did (:mod:`mlops_template.pipeline.evaluation`): the
  threshold that maximises ``evaluate.value_matrix``, metrics and value there; the baseline is the
  prior-only model (the training positive share for every row).
- **multiclass**: the service answers the most probable class, so value is that of those answers:
  ``evaluate.class_values[actual][predicted]`` per row, or 1 per right answer (accuracy) when unset.
  The baseline predicts the training class shares for every row.
- **regression**: value per row is minus the cost of the error, ``evaluate.costs.over`` per unit
  predicted too high and ``evaluate.costs.under`` per unit too low (both 1: minus the MAE). The
  baseline predicts the training mean for every row.

The baseline's figures come from the model card's ``training_data.target`` (what the training
target looked like), never from the test labels: a baseline fitted on the rows it is scored on
would flatter it. Every task writes every plot file (:data:`PLOT_NAMES`); a plot that does not
apply to the task is an empty list, which DVC skips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlops_template.core.params import EvaluateSection
from mlops_template.core.tasks import MulticlassTask, Task
from mlops_template.core.tasks.base import rounded
from mlops_template.pipeline import evaluation as ev
from mlops_template.pipeline import plots
from mlops_template.pipeline.comparison import Answers

PLOT_NAMES = plots.PLOT_NAMES


class ModelCardError(ValueError):
    """The candidate's model card does not describe what the evaluate stage needs (its task, its target)."""


class Scoring(ABC):
    """The evaluate stage's view of one task, with the ``evaluate`` params and the training target summary."""

    task_name: ClassVar[str]
    baseline_model: ClassVar[str]  # what the know-nothing model is, for gate.json

    def __init__(self, task: Task, cfg: EvaluateSection, summary: Mapping[str, Any] | None) -> None:
        self.task, self.cfg, self.summary = task, cfg, dict(summary or {})

    @abstractmethod
    def score(self, labels: np.ndarray, output: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
        """The task's metrics plus ``value_total``/``value_per_row`` and ``threshold`` (None but for binary)."""

    def baseline(self, labels: np.ndarray) -> dict[str, Any]:
        """The know-nothing model's metrics on ``labels`` (its output from the training target summary)."""
        return self.score(labels, self.task.baseline_output(self._summary(), len(labels)))

    @abstractmethod
    def answers(self, output: np.ndarray, threshold: float | None) -> Answers:
        """What a model with this output serves, for the golden-set comparison."""

    def slices(self, frame: pd.DataFrame, labels: np.ndarray, output: np.ndarray, threshold: float | None,
               columns: list[str], min_rows: int) -> dict[str, Any]:
        """The task's scalar metrics per value of each slice column (``too_small`` under ``min_rows`` rows)."""
        if len(frame) != len(labels) or len(output) != len(labels):
            raise ValueError(f"frame ({len(frame)}), labels ({len(labels)}) and output ({len(output)}) must align")
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise ValueError(f"slice columns not in the frame: {unknown}")
        result: dict[str, Any] = {}
        for column in columns:
            result[column] = {}
            for key, rows in ev.slice_groups(frame[column]):
                if len(rows) < min_rows:
                    result[column][key] = {"n": len(rows), "too_small": True}
                    continue
                found = self.task.metrics(labels[rows], output[rows])
                result[column][key] = {k: v for k, v in found.items() if not isinstance(v, Mapping)}
        return result

    @abstractmethod
    def plots(self, labels: np.ndarray, output: np.ndarray, threshold: float | None) -> dict[str, list[dict]]:
        """Every plot of :data:`PLOT_NAMES`: this task's data, ``[]`` for the others'."""

    def headline(self, metrics: Mapping[str, Any]) -> str:
        """One line for the log: the primary metric and value per row."""
        primary = metrics.get(self.task.primary_metric)
        shown = "n/a" if primary is None else f"{primary:.4f}"
        return f"{self.task.primary_metric} {shown}, value/row {metrics['value_per_row']:.4g}"

    def _summary(self) -> dict[str, Any]:
        if not self.summary:
            raise ValueError(f"the {self.task_name} baseline needs the training target summary "
                             "(model card training_data.target)")
        return self.summary


class BinaryScoring(Scoring):
    """Binary, exactly as before tasks: threshold search on the value matrix, prior-only baseline."""

    task_name: ClassVar[str] = "binary"
    baseline_model: ClassVar[str] = "prior-only (predicts the training positive share)"

    def score(self, labels: np.ndarray, output: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
        """Metrics and value at ``threshold`` (default: the value-maximising one on these rows)."""
        return binary_score(labels, output, self.cfg.value_matrix, threshold)

    def baseline(self, labels: np.ndarray) -> dict[str, Any]:
        """The prior-only model: ROC AUC 0.5, log loss the entropy under the training positive share."""
        return ev.baseline_metrics(labels, float(self._summary()["positive_share"]), self.cfg.value_matrix)

    def answers(self, output: np.ndarray, threshold: float | None) -> Answers:
        """Positive-class probability, positive at or above ``threshold``."""
        return Answers(output, (output >= threshold).astype("int64"))

    def slices(self, frame: pd.DataFrame, labels: np.ndarray, output: np.ndarray, threshold: float | None,
               columns: list[str], min_rows: int) -> dict[str, Any]:
        """Binary's slice figures as before (ROC AUC, accuracy, F1, rates)."""
        return ev.slice_metrics(frame, labels, output, threshold, columns, min_rows)

    def plots(self, labels: np.ndarray, output: np.ndarray, threshold: float | None) -> dict[str, list[dict]]:
        """ROC, precision-recall, calibration and the confusion matrix at the threshold."""
        return plots.binary(labels, output, threshold, (self.task.negative, str(self.task.positive)))

    def headline(self, metrics: Mapping[str, Any]) -> str:
        """The line the stage always logged."""
        return (f"ROC AUC {metrics['roc_auc']:.4f}, value/row {metrics['value_per_row']:.2f} "
                f"at threshold {metrics['threshold']:.3f}")


def binary_score(labels: np.ndarray, proba: np.ndarray, value_matrix: Mapping[str, float],
                 threshold: float | None = None) -> dict[str, Any]:
    """Binary metrics and business value at ``threshold`` (default: the best one on these rows)."""
    if threshold is None:
        threshold, _ = ev.best_threshold(labels, proba, value_matrix)
    metrics = ev.score_metrics(labels, proba, threshold)
    metrics.update(ev.business_value(labels, proba, threshold, value_matrix))
    metrics["threshold"] = threshold
    return metrics


class MulticlassScoring(Scoring):
    """Multiclass: value of the served (most probable) class, class-prior baseline."""

    task_name: ClassVar[str] = "multiclass"
    baseline_model: ClassVar[str] = "class prior (predicts the training class shares)"

    def value_table(self) -> np.ndarray:
        """``evaluate.class_values`` as a K x K array (actual row, predicted column); identity when unset."""
        classes = list(self.task.classes)
        table = self.cfg.class_values
        if table is None:
            return np.eye(len(classes))
        missing = [f"{a}->{p}" for a in classes for p in classes if p not in table.get(a, {})]
        unknown = sorted({a for a in table if a not in classes} | {p for r in table.values() for p in r
                                                                   if p not in classes})
        if missing or unknown:
            raise ValueError(f"evaluate.class_values must give a value for every (actual, predicted) pair of the "
                             f"classes {classes}: missing {missing[:10]}, unknown classes {unknown}")
        return np.array([[float(table[a][p]) for p in classes] for a in classes])

    def decider(self) -> MulticlassTask:
        """The task answering as the service will: by expected value under ``evaluate.class_values``
        when set (the table ships in the package as ``decision_values``), else the most probable class."""
        table = None if self.cfg.class_values is None else self.value_table()
        return MulticlassTask(self.task.target, self.task.classes, decision_values=table)

    def score(self, labels: np.ndarray, output: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
        """Log loss, accuracy, macro-F1, ... (of the most probable class) and the value of the served answers."""
        metrics = self.task.metrics(labels, output)
        decider = self.decider()
        per_row = self.value_table()[np.asarray(labels, dtype="int64"), decider.decide(output)]
        table = decider.decision_values
        metrics.update(value_total=rounded(per_row.sum()), value_per_row=rounded(per_row.mean()), threshold=None,
                       decision_values=None if table is None else table.tolist())
        return metrics

    def answers(self, output: np.ndarray, threshold: float | None) -> Answers:
        """The served class, its probability as the score, every probability kept."""
        output = np.asarray(output, dtype="float64")
        decided = self.decider().decide(output)
        return Answers(output[np.arange(len(output)), decided], decided, proba=output)

    def plots(self, labels: np.ndarray, output: np.ndarray, threshold: float | None) -> dict[str, list[dict]]:
        """K x K confusion matrix of the served answers and per-class calibration."""
        return plots.multiclass(labels, output, self.task.classes)


class RegressionScoring(Scoring):
    """Regression: minus the cost of over- and under-prediction, mean-predictor baseline."""

    task_name: ClassVar[str] = "regression"
    baseline_model: ClassVar[str] = "mean predictor (predicts the training target's mean)"

    @property
    def scale(self) -> float:
        """The training target's standard deviation (1 when it is 0): the unit of the golden-set checks."""
        std = float(self._summary().get("std") or 0.0)
        return std if std > 0 else 1.0

    def score(self, labels: np.ndarray, output: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
        """RMSE, MAE, R², MAPE and minus the cost per row of the errors."""
        metrics = self.task.metrics(labels, output)
        error = np.asarray(output, dtype="float64") - np.asarray(labels, dtype="float64")
        cost = np.where(error > 0, error * self.cfg.costs.over, -error * self.cfg.costs.under)
        metrics.update(value_total=rounded(-cost.sum()), value_per_row=rounded(-cost.mean()), threshold=None)
        return metrics

    def answers(self, output: np.ndarray, threshold: float | None) -> Answers:
        """The prediction, and as the score its rank among the training targets (0 to 1)."""
        output = np.asarray(output, dtype="float64")
        return Answers(self.rank(output), output, scale=self.scale)

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` fall in the training target's distribution (its quantiles, linearly interpolated)."""
        quantiles = self._summary().get("quantiles") or {}
        if len(quantiles) < 2:
            raise ModelCardError("the regression target summary lacks its quantiles (model card training_data.target)")
        levels = np.array(sorted(float(q) for q in quantiles))
        points = np.maximum.accumulate([float(quantiles[k]) for k in sorted(quantiles, key=float)])
        return np.interp(values, points, levels)

    def plots(self, labels: np.ndarray, output: np.ndarray, threshold: float | None) -> dict[str, list[dict]]:
        """Predicted against actual, and residuals against predicted."""
        return plots.regression(labels, output)


SCORINGS: dict[str, type[Scoring]] = {s.task_name: s for s in (BinaryScoring, MulticlassScoring, RegressionScoring)}


def scoring_for(task: Task, cfg: EvaluateSection, summary: Mapping[str, Any] | None) -> Scoring:
    """The evaluate stage's scoring of ``task`` (ValueError for a task it does not know)."""
    if task.name not in SCORINGS:
        raise ValueError(f"the evaluate stage cannot score a {task.name!r} task; known: {sorted(SCORINGS)}")
    return SCORINGS[task.name](task, cfg, summary)


def target_summary(card: Mapping[str, Any], task: Task) -> dict[str, Any]:
    """The training target summary of a model card (``training_data.target``); ModelCardError if it has none.

    A binary card from before tasks has only ``training_data.positive_share``, which is its summary.
    """
    if card.get("task", task.name) != task.name:
        raise ModelCardError(f"the model was trained for a {card['task']} task but the contract declares {task.name}: "
                         "retrain it")
    data = card.get("training_data") or {}
    summary = data.get("target")
    if summary is None and "positive_share" in data:  # only binary cards carry it
        summary = {"positive_share": data["positive_share"]}
    if not summary:
        raise ModelCardError(f"the model card has no training_data.target (what the {task.name} training target looked "
                         "like), so no baseline can be scored: retrain with the current train stage")
    return dict(summary)
