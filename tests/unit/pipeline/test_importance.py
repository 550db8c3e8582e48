"""Permutation importance per contract input column, on every task, with real fitted models."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mlops_template.core.contract import contract_from_dict
from mlops_template.pipeline.importance import permutation_importance
from tests.support.fitted_tasks import TASK_NAMES, Dataset, dataset, fit


def with_leak(task: str) -> Dataset:
    """The task's dataset plus ``leak``: the target itself, barely blurred (the strongest column there can be)."""
    data = dataset(task)
    frame = data.frame.copy()
    labels = data.task.encode(frame[data.contract.target]).astype("float64")
    frame["leak"] = labels + np.random.default_rng(1).normal(scale=0.05 * (labels.std() or 1.0), size=len(frame))
    raw = copy.deepcopy(data.contract.raw)
    raw["columns"]["leak"] = {"type": "float", "role": "numeric"}
    return Dataset(data.name, frame, contract_from_dict(raw))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_the_strongest_column_ranks_first_and_a_column_the_model_does_not_read_is_zero_and_unused(task):
    data = with_leak(task)
    # ``leak`` reaches the model only through a derived feature: permuting the raw column must move it.
    fitted = fit(data, drop=("noise", "leak"), derived={"leak_twice": "leak * 2"}, estimator="random_forest")
    labels = data.task.encode(fitted.test[data.contract.target])
    inputs = [c.name for c in data.contract.input_columns]
    result = permutation_importance(fitted.predict, fitted.test, labels, data.task, inputs,
                                    fitted.spec.source_columns)

    assert result["metric"] == data.task.primary_metric and set(result["columns"]) == set(inputs)
    assert next(iter(result["columns"])) == "leak" and result["columns"]["leak"] > 0
    assert result["columns"]["noise"] == 0.0 and result["unused"] == ["noise"]
    assert "noise" not in result["weights"] and result["weights"]["leak"] == max(result["weights"].values())
    assert sum(result["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert all(v >= 0 for v in result["weights"].values())


def test_importance_is_reproducible_and_refuses_misaligned_or_unknown_input():
    data = dataset("regression")
    fitted = fit(data)
    labels = data.task.encode(fitted.test["progression"])
    args = (fitted.predict, fitted.test, labels, data.task, ["bmi", "s5"], fitted.spec.source_columns)
    assert permutation_importance(*args) == permutation_importance(*args)
    with pytest.raises(ValueError, match="aligned"):
        permutation_importance(fitted.predict, fitted.test, labels[:-1], data.task, ["bmi"], [])
    with pytest.raises(ValueError, match="not in the frame"):
        permutation_importance(fitted.predict, fitted.test, labels, data.task, ["height"], [])
