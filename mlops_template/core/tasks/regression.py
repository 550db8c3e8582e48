"""Regression: a number per row (a price, a demand, a duration)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge

from mlops_template.core.boosting import LightGBMModel
from mlops_template.core.tasks.base import Task, answer_field, rounded

REGRESSORS: dict[str, type] = {
    "linear": Ridge,
    "logistic_regression": Ridge,  # the linear model under the name params.yaml has always used
    "random_forest": RandomForestRegressor,
    "hist_gradient_boosting": HistGradientBoostingRegressor,
    "lightgbm": LightGBMModel,  # objective set by the task (Task.estimator)
}
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


class RegressionTask(Task):
    """A number: the answer is the model's prediction."""

    name: ClassVar[str] = "regression"
    primary_metric: ClassVar[str] = "rmse"
    primary_direction: ClassVar[str] = "lower_is_better"
    estimators: ClassVar[dict[str, type]] = REGRESSORS
    headline_metrics: ClassVar[tuple[str, ...]] = ("rmse", "mae", "r2")
    live_metrics: ClassVar[dict[str, str]] = {"rmse": "lower_is_better", "mae": "lower_is_better"}

    def encode(self, target: pd.Series) -> np.ndarray:
        """The target as floats (ValueError when a value is not a number)."""
        values = pd.to_numeric(target, errors="coerce")
        if values.isna().any():
            bad = target[values.isna()].astype(str).unique()[:5].tolist()
            raise ValueError(f"target {self.target!r} holds values that are not numbers: {bad}")
        return values.to_numpy(dtype="float64")

    def predict(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """The predicted value per row."""
        return np.asarray(model.predict(features), dtype="float64")

    def target_summary(self, labels: np.ndarray) -> dict[str, Any]:
        """Mean, median, spread and quantiles of the training target (baseline and histogram buckets)."""
        y = np.asarray(labels, dtype="float64")
        return {"mean": rounded(y.mean()), "median": rounded(np.median(y)), "std": rounded(y.std()),
                "quantiles": {f"{q:g}": rounded(np.quantile(y, q)) for q in QUANTILES}}

    def metrics(self, labels: np.ndarray, output: np.ndarray) -> dict[str, Any]:
        """RMSE, MAE, R², and MAPE when every actual value is positive."""
        y = np.asarray(labels, dtype="float64")
        pred = np.asarray(output, dtype="float64")
        if len(y) != len(pred) or len(y) == 0 or not np.isfinite(pred).all():
            raise ValueError(f"labels ({len(y)}) and predictions ({len(pred)}) must be non-empty, equal and finite")
        return {
            "rmse": rounded(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": rounded(skm.mean_absolute_error(y, pred)),
            "r2": rounded(skm.r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else None,
            "mape": rounded(skm.mean_absolute_percentage_error(y, pred)) if (y > 0).all() else None,
            "mean_prediction": rounded(pred.mean()),
            "mean_actual": rounded(y.mean()),
            "n": int(len(y)),
        }

    def value_params(self) -> dict[str, Any]:
        """A cost of 1 per unit of over- and of under-prediction (value per row: minus the mean absolute error)."""
        return {"costs": {"over": 1.0, "under": 1.0}}

    def baseline_output(self, summary: Mapping[str, Any], rows: int) -> np.ndarray:
        """The training mean for every row (what minimises squared error knowing nothing)."""
        return np.full(rows, float(summary["mean"]))

    def answers(self, output: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        """``prediction`` per row."""
        return [{"prediction": value} for value in np.asarray(output, dtype="float64").tolist()]

    def output_of_answers(self, answers: pd.DataFrame) -> np.ndarray:
        """The logged ``prediction`` of each answer."""
        return answer_field(answers, "prediction").to_numpy(dtype="float64")
