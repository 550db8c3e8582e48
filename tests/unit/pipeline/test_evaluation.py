"""Unit tests for mlops_template.evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mlops_template.pipeline import evaluation as ev

MATRICES = [
    {"tp": 120.0, "fp": -30.0, "tn": 0.0, "fn": 0.0},
    {"tp": 1.0, "fp": -1.0, "tn": 1.0, "fn": -1.0},
    {"tp": 5.0, "fp": -50.0, "tn": 0.0, "fn": 0.0},  # contacting is mostly a loss
    {"tp": 0.0, "fp": 0.0, "tn": 0.0, "fn": 0.0},  # all ties: highest threshold wins
    {"tp": 10.0, "fp": 2.0, "tn": -1.0, "fn": -3.0},  # contacting everyone is best
]


def _data(seed: int, n: int = 400, rounding: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    proba = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1).round(rounding)  # rounding makes ties
    return y, proba


def _brute_force(y, proba, matrix) -> tuple[float, float]:
    candidates = sorted(set(proba.tolist()) | {1.0}, reverse=True)
    best = None
    for t in candidates:  # descending, so strict > keeps the higher threshold on ties
        value = ev.business_value(y, proba, t, matrix)["value_total"]
        if best is None or value > best[1]:
            best = (t, value)
    return best[0], round(best[1] / len(y), 6)


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_threshold_matches_brute_force(matrix, seed):
    y, proba = _data(seed)
    assert ev.best_threshold(y, proba, matrix) == _brute_force(y, proba, matrix)


def test_best_threshold_predicts_none_when_every_contact_loses():
    y, proba = _data(3)
    threshold, per_row = ev.best_threshold(y, proba, {"tp": -1.0, "fp": -1.0, "tn": 0.0, "fn": 0.0})
    assert threshold == 1.0
    assert per_row == 0.0


def test_best_threshold_value_is_reproduced_by_business_value():
    y, proba = _data(4, rounding=6)
    matrix = MATRICES[0]
    threshold, per_row = ev.best_threshold(y, proba, matrix)
    assert ev.business_value(y, proba, threshold, matrix)["value_per_row"] == per_row
    assert 0.0 <= threshold <= 1.0


def test_best_threshold_rejects_incomplete_matrix():
    y, proba = _data(0)
    with pytest.raises(ValueError, match="fn"):
        ev.best_threshold(y, proba, {"tp": 1.0, "fp": -1.0, "tn": 0.0})


def test_business_value_counts_and_totals():
    y = np.array([1, 1, 0, 0, 1])
    proba = np.array([0.9, 0.4, 0.6, 0.1, 0.5])
    result = ev.business_value(y, proba, 0.5, {"tp": 120, "fp": -30, "tn": 0, "fn": -5})
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 1, 1)
    assert result["value_total"] == 2 * 120 - 30 - 5
    assert result["value_per_row"] == pytest.approx(205 / 5)


def test_score_metrics_keys_types_and_values():
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.6, 0.4, 0.9])
    result = ev.score_metrics(y, proba, 0.5)
    assert set(result) == {
        "roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "log_loss", "positive_rate", "n",
    }
    assert result["roc_auc"] == 0.75
    assert result["accuracy"] == 0.5
    assert result["n"] == 4 and type(result["n"]) is int
    assert all(type(v) is float for k, v in result.items() if k != "n")
    json.dumps(result, allow_nan=False)


def test_score_metrics_single_class_has_no_ranking_metrics():
    result = ev.score_metrics(np.zeros(5, dtype=int), np.full(5, 0.2), 0.5)
    assert result["roc_auc"] is None and result["pr_auc"] is None
    assert result["accuracy"] == 1.0
    ev.assert_finite(result)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="equal length"):
        ev.score_metrics(np.array([0, 1]), np.array([0.5]), 0.5)
    with pytest.raises(ValueError, match="0 and 1"):
        ev.score_metrics(np.array([0, 2]), np.array([0.5, 0.5]), 0.5)
    with pytest.raises(ValueError, match="probabilities"):
        ev.score_metrics(np.array([0, 1]), np.array([0.5, np.nan]), 0.5)


def test_slice_metrics_single_class_small_and_missing_slices():
    n = 100
    frame = pd.DataFrame({"sex": ["a"] * 60 + ["b"] * 35 + [None] * 5})
    y = np.array([0, 1] * 30 + [1] * 35 + [0] * 5)
    proba = np.linspace(0.05, 0.95, n)
    result = ev.slice_metrics(frame, y, proba, 0.5, ["sex"], min_rows=30)
    assert set(result["sex"]) == {"a", "b", "<missing>"}
    assert result["sex"]["a"]["n"] == 60 and result["sex"]["a"]["roc_auc"] is not None
    single = result["sex"]["b"]
    assert single["roc_auc"] is None
    assert single["positive_rate"] == 1.0
    assert single["accuracy"] == single["predicted_positive_rate"]  # all positives
    assert result["sex"]["<missing>"] == {"n": 5, "too_small": True}
    json.dumps(result, allow_nan=False)


def test_slice_metrics_unknown_column_raises():
    y, proba = _data(0, n=10)
    with pytest.raises(ValueError, match="nope"):
        ev.slice_metrics(pd.DataFrame({"a": range(10)}), y, proba, 0.5, ["nope"])


DEGENERATE = {
    "random": _data(5, n=5000, rounding=6),
    "all_equal_scores": (np.array([0, 1] * 50), np.full(100, 0.5)),
    "single_class": (np.zeros(50, dtype=int), np.linspace(0, 1, 50)),
    "only_positives": (np.ones(50, dtype=int), np.linspace(0, 1, 50)),
    "extreme_scores": (np.array([0, 1, 0, 1]), np.array([0.0, 1.0, 1.0, 0.0])),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_plot_data_is_finite_json(case):
    y, proba = DEGENERATE[case]
    plots = {
        "roc": ev.roc_points(y, proba),
        "pr": ev.pr_points(y, proba),
        "calibration": ev.calibration_points(y, proba),
        "calibration_quantile": ev.calibration_points(y, proba, strategy="quantile"),
        "confusion": ev.confusion_rows(y, proba, 0.5, labels=("<=50K", ">50K")),
    }
    ev.assert_finite(plots)
    json.dumps(plots, allow_nan=False)
    for row in plots["roc"] + plots["pr"]:
        assert 0.0 <= row["threshold"] <= 1.0
    assert sum(r["count"] for r in plots["calibration"]) == len(y)
    assert sum(r["count"] for r in plots["calibration_quantile"]) == len(y)


def test_roc_points_drop_infinite_threshold_and_span_the_square():
    y, proba = DEGENERATE["random"]
    rows = ev.roc_points(y, proba)
    assert rows[0] == {"fpr": 0.0, "tpr": 0.0, "threshold": 1.0}
    assert rows[-1]["fpr"] == 1.0 and rows[-1]["tpr"] == 1.0


def test_pr_points_downsampled_keeping_ends():
    y, proba = DEGENERATE["random"]
    rows = ev.pr_points(y, proba, max_points=500)
    assert 2 < len(rows) <= 500
    assert rows[0]["recall"] == 1.0
    assert rows[-1] == {"recall": 0.0, "precision": 1.0, "threshold": 1.0}


def test_calibration_uniform_bins_skip_empty():
    y = np.array([0, 1, 1, 1])
    proba = np.array([0.05, 0.95, 0.95, 1.0])
    rows = ev.calibration_points(y, proba, n_bins=10)
    assert rows == [
        {"mean_predicted": 0.05, "fraction_positive": 0.0, "count": 1},
        {"mean_predicted": pytest.approx(0.966667), "fraction_positive": 1.0, "count": 3},
    ]


def test_confusion_rows_count_every_cell_with_string_labels():
    rows = ev.confusion_rows(np.array([1, 0, 1, 1]), np.array([0.7, 0.7, 0.2, 0.9]), 0.5, labels=("no", "yes"))
    assert rows == [
        {"actual": "no", "predicted": "no", "count": 0},
        {"actual": "no", "predicted": "yes", "count": 1},
        {"actual": "yes", "predicted": "no", "count": 1},
        {"actual": "yes", "predicted": "yes", "count": 2},
    ]


def test_curves_and_the_confusion_matrix_do_not_grow_with_the_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200_000)
    proba = np.clip(0.3 * y + rng.random(200_000) * 0.7, 0, 1)
    roc = ev.roc_points(y, proba)
    assert len(roc) <= 1000 and roc[0]["fpr"] == 0.0 and (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    assert len(ev.pr_points(y, proba)) <= 500
    assert len(ev.confusion_rows(y, proba, 0.5)) == 4


def test_assert_finite_names_the_path():
    ev.assert_finite({"a": [1, 2.5, None, "x"], "b": {"c": np.float64(1.0)}})
    with pytest.raises(ValueError, match=r"\$\.plots\[1\]\.threshold"):
        ev.assert_finite({"plots": [{"threshold": 0.5}, {"threshold": math.inf}]})
    with pytest.raises(ValueError, match=r"\$\.x"):
        ev.assert_finite({"x": np.float64("nan")})


def test_baseline_metrics_are_those_of_the_base_rate():
    from mlops_template.pipeline.evaluation import baseline_metrics

    y = np.array([1] * 30 + [0] * 70)
    base = baseline_metrics(y, 0.3, {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0})
    entropy = -(0.3 * np.log(0.3) + 0.7 * np.log(0.7))
    assert base["roc_auc"] == 0.5 and base["log_loss"] == pytest.approx(entropy, abs=1e-6)
    assert base["accuracy"] == pytest.approx(0.7)  # predicting the majority class
    assert base["prior"] == 0.3
    with pytest.raises(ValueError, match="between 0 and 1"):
        baseline_metrics(y, 1.0, {"tp": 1.0, "fp": 0.0, "tn": 1.0, "fn": 0.0})
