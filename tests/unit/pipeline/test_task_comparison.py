"""The golden-set comparison (slices, answer changes) for multiclass and regression, with real models.

A clean retrain (a batch of rows added) passes; a candidate that moves one group's answers
(the ``region=north`` rows) fails the slice and answer-change checks, naming the group. The bundled
datasets are small (a group of the wine data has about 50 rows, whose |z| can reach only about 7),
so the answer-change check asks for z >= 5 here, the slice check's default, instead of Adult's 8.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.params import EvaluateSection, GateSection
from mlops_template.pipeline.assessment import compare_on_golden
from mlops_template.pipeline.gate import decide
from tests.support.fitted_tasks import dataset, fit

TASKS = ("multiclass", "regression")


def golden_rows(data) -> pd.DataFrame:
    """The whole (small) dataset as the golden set: unique rows, as a frozen golden set holds."""
    return data.frame


def targeted(fitted):
    """The model, except on region=north rows: regression predicts a whole spread higher, multiclass moves
    40% of each row's probabilities to the next class."""
    std = fitted.card["training_data"]["target"].get("std")

    def predict(frame: pd.DataFrame) -> np.ndarray:
        out = fitted.predict(frame)
        north = (frame["region"] == "north").to_numpy()
        if out.ndim == 1:
            return out + std * north
        moved = 0.6 * out + 0.4 * np.roll(out, 1, axis=1)
        return np.where(north[:, None], moved, out)
    return predict


def compare(champion, candidate_predict, rows):
    data = champion.data
    gate = GateSection.parse({**data.task.gate_thresholds(),
                              "slices": {"metric": "true_class_probability" if data.task.name == "multiclass"
                                         else "neg_abs_error", "min_rows": 40},
                              "answer_changes": {"min_rows": 40, "min_z": 5.0}})
    cfg = EvaluateSection.parse({"slices": ["region"], "min_slice_rows": 40})
    summary = champion.card["training_data"]["target"]
    result = compare_on_golden(data.contract, cfg, gate, rows, candidate_predict, None, champion.predict, None,
                               summary=summary)
    return result, decide(result["challenger"], result["champion"], gate, None, result)


@pytest.mark.parametrize("task", TASKS)
def test_a_clean_retrain_passes_the_golden_checks(task):
    data = dataset(task)
    champion, retrained = fit(data, train_share=0.85), fit(data)  # the retrain adds a batch of rows
    result, decision = compare(champion, retrained.predict, golden_rows(data))
    kinds = {c["kind"] for c in decision.checks if c["passed"]}
    assert {"slice", "answer_change"} <= kinds, decision.reasons
    assert not [c for c in decision.checks if c["kind"] in ("slice", "answer_change") and c["passed"] is False]
    assert result["served"]["metric"] in ("accuracy", "neg_abs_error") and result["served"]["slices"]


@pytest.mark.parametrize("task", TASKS)
def test_answers_moved_in_one_group_fail_the_slice_and_answer_checks_naming_it(task):
    data = dataset(task)
    champion = fit(data)
    result, decision = compare(champion, targeted(champion), golden_rows(data))
    failed = {(c["kind"], c.get("slice") or c.get("group")) for c in decision.checks if c["passed"] is False}
    assert ("slice", "region=north") in failed and ("answer_change", "region=north") in failed
    assert not decision.blessed
    north = next(g for g in result["answer_changes"]["golden set"]["groups"] if g["value"] == "north")
    assert north["shift"] * (1 if task == "regression" else -1) > 0  # up a spread; off the champion's class
    assert north["changed"] > 0 and north["examples"]
    assert all(e["champion_answer"] != e["candidate_answer"] for e in north["examples"])


@pytest.mark.parametrize("task", TASKS)
def test_the_same_model_changes_no_answer(task):
    data = dataset(task)
    champion = fit(data)
    result, _ = compare(champion, champion.predict, golden_rows(data))
    assert result["answer_changes"]["golden set"]["changed"] == 0
    assert all(c["passed"] is not False for c in result["checks"])
