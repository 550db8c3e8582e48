"""What a prediction task is: the one place that knows how targets, models and answers differ.

A contract names its task (``binary``, ``multiclass`` or ``regression``); :func:`mlops_template.core.tasks.task_of`
returns the :class:`Task` that every stage, the service and the monitors ask instead of testing the
task themselves. Adding a task is one new module here with a subclass, registered in ``TASKS``.

Shapes, the same everywhere:
- ``encode(target)``: the labels a model is fitted on and scored against (binary: 0/1; multiclass:
  the class index in :attr:`Task.classes` order; regression: floats).
- ``output``: what :meth:`Task.predict` returns for n rows (binary: the positive-class probability,
  shape (n,); multiclass: one probability per class in :attr:`Task.classes` order, (n, K);
  regression: the predicted value, (n,)).
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlops_template.core.boosting import LightGBMModel

logger = logging.getLogger(__name__)

DECIMALS = 6


def rounded(value: float | None) -> float | None:
    """A metric as JSON carries it: a plain float rounded to 6 decimals (None stays None)."""
    return None if value is None else round(float(value), DECIMALS)


def with_accepted_params(cls: type, hyperparameters: Mapping[str, Any], seed: int) -> Any:
    """``cls(**hyperparameters)`` keeping only the keys ``cls`` accepts (a seed where it takes one).

    ``train.hyperparameters`` are named per estimator, not per task: ``C`` means something to a
    logistic regression and nothing to a ridge regression. Keys the estimator does not take are
    dropped with a warning naming them, never passed on to fail deep inside sklearn.
    """
    accepted = set(inspect.signature(cls).parameters)
    params = {k: v for k, v in hyperparameters.items() if k in accepted}
    dropped = sorted(set(hyperparameters) - accepted)
    if dropped:
        logger.warning("%s takes no %s: ignored", cls.__name__, ", ".join(dropped))
    if "random_state" in accepted:
        params.setdefault("random_state", seed)
    return cls(**params)

def answer_field(answers: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of logged answers; ValueError when they lack it or it is empty somewhere."""
    if name not in answers.columns or answers[name].isna().any():
        raise ValueError(f"the answers lack {name!r} (a record of another task, or an older log?)")
    return answers[name]


class Task(ABC):
    """One prediction task: target encoding, estimators, outputs, metrics, baseline and answers."""

    name: ClassVar[str]
    #: The metric the gate, the experiments view and the live-quality check lead with, and its direction.
    primary_metric: ClassVar[str]
    primary_direction: ClassVar[str]
    #: ``train.estimator`` names and the sklearn class each means for this task.
    estimators: ClassVar[dict[str, type]]
    #: The few :meth:`metrics` keys a model card's ``train_metrics`` keeps (MLflow logs them as ``train_<key>``).
    headline_metrics: ClassVar[tuple[str, ...]]
    #: What live quality compares with the offline evaluation (and the canary between two versions):
    #: metric name -> direction (``higher_is_better`` / ``lower_is_better``).
    live_metrics: ClassVar[dict[str, str]]

    def __init__(self, target: str, classes: tuple[str, ...] = (), positive: str | None = None) -> None:
        self.target = target
        self.classes = classes
        self.positive = positive

    # -- training --------------------------------------------------------------------------
    def estimator(self, name: str, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """A fresh estimator for ``train.estimator`` = ``name`` (ValueError lists the known names)."""
        if name not in self.estimators:
            raise ValueError(f"train.estimator must be one of {sorted(self.estimators)} for a {self.name} task, "
                             f"got {name!r}")
        model = with_accepted_params(self.estimators[name], hyperparameters, seed)
        if isinstance(model, LightGBMModel):
            model.set_params(objective=self.name)  # one class, three LightGBM objectives
        return model

    @abstractmethod
    def encode(self, target: pd.Series) -> np.ndarray:
        """The target column as the labels models are fitted and scored on."""

    def decode(self, labels: np.ndarray) -> list[Any]:
        """Encoded labels back to the contract's values (what a person reads)."""
        return labels.tolist()

    @abstractmethod
    def predict(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """The model's output for ``features`` (see the module docstring for its shape)."""

    @abstractmethod
    def target_summary(self, labels: np.ndarray) -> dict[str, Any]:
        """What the training target looked like (the model card's ``training_data.target``).

        It is what the baseline predicts from and what serving's prediction histogram is bucketed by.
        """

    def gate_thresholds(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Default ``gate.baseline_thresholds`` and ``gate.change_thresholds`` (what onboarding writes).

        On the primary metric: at least 5% better than the know-nothing model (:meth:`baseline_output`),
        and at most 2% worse than the champion, both relative to the reference's value.
        """
        better = -1.0 if self.primary_direction == "lower_is_better" else 1.0
        return {"baseline_thresholds": {self.primary_metric: {"direction": self.primary_direction,
                                                              "relative": 0.05 * better}},
                "change_thresholds": {self.primary_metric: {"direction": self.primary_direction,
                                                            "relative": -0.02 * better}}}

    def value_params(self) -> dict[str, Any]:
        """The ``evaluate`` keys that price this task's answers, as onboarding drafts them (none: the default).

        Onboarding writes these and removes the other tasks' pricing keys (a stale one names another dataset's
        classes or values).
        """
        return {}

    # -- evaluation ------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, labels: np.ndarray, output: np.ndarray) -> dict[str, Any]:
        """The task's metrics of ``output`` against ``labels`` (plain, rounded, JSON-ready)."""

    @abstractmethod
    def baseline_output(self, summary: Mapping[str, Any], rows: int) -> np.ndarray:
        """The output of the know-nothing model (class prior, mean) fitted on the training target."""

    def baseline_metrics(self, summary: Mapping[str, Any], labels: np.ndarray) -> dict[str, Any]:
        """Metrics of the know-nothing model on ``labels``: the bar any model worth serving clears."""
        return self.metrics(labels, self.baseline_output(summary, len(labels)))

    # -- serving ---------------------------------------------------------------------------
    @abstractmethod
    def answers(self, output: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        """The response body of each row, without ``model_version`` (binary: ``probability`` and ``label``)."""

    @abstractmethod
    def output_of_answers(self, answers: pd.DataFrame) -> np.ndarray:
        """The output that logged answers hold (the inverse of :meth:`answers`), one row per answer.

        Monitoring scores the inference log with it; ValueError names a field the answers lack.
        """

    def watched_prediction(self, output: np.ndarray) -> pd.Series:
        """What the prediction monitor compares between the reference and live traffic: the number
        the model outputs (binary: the probability; regression: the value), or, for a task that
        answers a class, the class names."""
        return pd.Series(np.asarray(output, dtype="float64"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"
