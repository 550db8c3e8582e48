"""The ingest guard's target checks for multiclass and regression contracts (binary: test_ingest_guard).

A batch drawn like the accepted data passes every check; a batch whose target moved (class shares
swapped, values 8 higher) fails ``label_shift``, and a group whose target moved fails the joint checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.contract import Contract, contract_from_dict
from mlops_template.ops.guard import Accepted, check_batch
from mlops_template.ops.guard.target import label_shift, target_view
from mlops_template.pipeline.validation import validate_frame

CLASSES = ("low", "mid", "high")
THRESHOLDS = {"min_rows": 100, "max_invalid_share": 0.05, "max_duplicate_share": 0.05,
              "max_label_shift": 0.1, "max_psi": 0.25, "max_tvd": 0.1, "max_drifted_columns": 0}


def contract_of(task: str) -> Contract:
    target = ({"type": "float", "role": "target"} if task == "regression"
              else {"type": "str", "role": "target", "allowed": list(CLASSES)})
    return contract_from_dict({
        "name": f"toy-{task}", "unique_rows": True, "target": {"column": "y", "task": task},
        "columns": {"age": {"type": "int", "role": "numeric", "min": 0, "max": 120},
                    "score": {"type": "float", "role": "numeric"},
                    "colour": {"type": "str", "role": "categorical", "allowed": ["red", "green", "blue"]},
                    "y": target}})


def raw_frame(task: str, n: int, seed: int, shares=(0.5, 0.3, 0.2), shift: float = 0.0,
              red_shift: float = 0.0) -> pd.DataFrame:
    """``n`` distinct rows as raw strings; the target by ``shares`` (multiclass) or ~N(50, 10) + ``shift``,
    and ``red_shift`` more (in value or toward "high") where colour is red."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n)
    frame = pd.DataFrame({"age": rng.integers(20, 70, n).astype(str),
                          "score": [f"{v:.6f}" for v in rng.normal(0, 1, n)], "colour": colour})
    red = colour == "red"
    if task == "regression":
        values = rng.normal(50, 10, n) + shift + red_shift * red
        frame["y"] = [f"{v:.4f}" for v in values]
    else:
        y = rng.choice(CLASSES, n, p=list(shares))
        y[red & (rng.random(n) < red_shift)] = "high"
        frame["y"] = y
    return frame


def accepted(task: str) -> Accepted:
    contract = contract_of(task)
    return Accepted.from_frame(validate_frame(raw_frame(task, 3000, 0), contract).valid, contract)


def failed(report) -> list[str]:
    return [c.name for c in report.checks if not c.passed]


def check(report, name: str):
    return next(c for c in report.checks if c.name == name)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_a_batch_like_the_accepted_data_passes_every_check(task) -> None:
    report, valid = check_batch("like.csv", raw_frame(task, 600, 1), accepted(task), contract_of(task), THRESHOLDS)
    assert failed(report) == [] and len(valid) == 600
    assert check(report, "label_shift").value < 0.1
    assert {"label_by_group", "trigger", "cumulative_label_given_inputs"} <= {c.name for c in report.checks}


def test_multiclass_class_shares_that_moved_fail_label_shift() -> None:
    report, _ = check_batch("swapped.csv", raw_frame("multiclass", 600, 2, shares=(0.2, 0.3, 0.5)),
                            accepted("multiclass"), contract_of("multiclass"), THRESHOLDS)
    shift = check(report, "label_shift")
    assert shift.passed is False and shift.value == pytest.approx(0.3, abs=0.06)
    assert shift.reason.startswith("class 'low' share") or shift.reason.startswith("class 'high' share")
    assert set(shift.details["batch"]) == set(CLASSES)


def test_regression_target_that_moved_fails_label_shift_by_psi() -> None:
    report, _ = check_batch("higher.csv", raw_frame("regression", 600, 3, shift=8.0), accepted("regression"),
                            contract_of("regression"), THRESHOLDS)
    shift = check(report, "label_shift")
    assert shift.passed is False and shift.value > 0.25 and shift.threshold == 0.25
    assert shift.reason.startswith("target PSI") and shift.details["batch_mean"] > shift.details["accepted_mean"] + 6


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_a_group_whose_target_moved_fails_the_joint_check(task) -> None:
    """Only the red rows' target moved (a third of the batch): the group check sees it."""
    moved = 25.0 if task == "regression" else 0.6
    report, _ = check_batch("red.csv", raw_frame(task, 900, 4, red_shift=moved), accepted(task), contract_of(task),
                            {**THRESHOLDS, "max_label_shift": 1.0, "max_psi": 10.0})
    group = check(report, "label_by_group")
    assert group.passed is False, group.reason
    assert "colour=red" in group.reason


def test_regression_outcomes_are_the_accepted_target_s_quarters() -> None:
    contract = contract_of("regression")
    view = target_view(contract, pd.Series(np.arange(1.0, 101.0)))
    assert view.classes == ("<= 25.75", "25.75 to 50.5", "50.5 to 75.25", "> 75.25") == view.shifted
    hits = view.indicators(pd.Series(["1", "25.75", "26", "99", None]))
    assert [int(hits[c].sum()) for c in view.classes] == [2, 1, 0, 1]  # the null is no outcome
    with pytest.raises(ValueError, match="needs the accepted values"):
        target_view(contract)
    multiclass = target_view(contract_of("multiclass"))
    assert multiclass.shifted == CLASSES
    assert multiclass.indicators(pd.Series(["mid", "high", None]))["mid"].tolist() == [1.0, 0.0, 0.0]


def test_label_shift_of_a_binary_contract_is_unchanged() -> None:
    binary = contract_from_dict({"columns": {"x": {"type": "float", "role": "numeric"},
                                             "y": {"type": "str", "role": "target", "allowed": ["yes", "no"]}},
                                 "target": {"column": "y", "positive": "yes"}})
    found = label_shift(pd.Series(["yes"] * 30 + ["no"] * 70), pd.Series(["yes"] * 50 + ["no"] * 50), binary,
                        THRESHOLDS)
    assert found.value == pytest.approx(0.2) and found.passed is False
    assert found.reason == "positive share 0.300 vs 0.500 accepted: shift 0.200 above the limit 0.1"
