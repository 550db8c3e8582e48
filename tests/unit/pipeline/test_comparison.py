"""Unit tests for the golden-set comparisons: slice losses, answer changes, and how the gate uses them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_template.pipeline import comparison as C
from mlops_template.pipeline.gate import decide, parse_config

CONFIG = {"change_thresholds": {"roc_auc": {"direction": "higher_is_better", "absolute": -0.005}}}
METRICS = {"roc_auc": 0.9}
SLICES = parse_config({}).slices
CHANGES = parse_config({}).answer_changes


def population(seed: int = 0, n: int = 6000) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows with a group column, a numeric column, labels and a champion's scores that fit them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"group": rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2]),
                          "age": rng.integers(18, 80, size=n)})
    signal = rng.normal(size=n)
    labels = (signal + rng.normal(scale=0.8, size=n) > 0.8).astype(int)
    scores = 1 / (1 + np.exp(-(2.5 * signal - 2.0)))
    return frame, labels, scores


def answers(scores: np.ndarray, threshold: float = 0.4) -> C.Answers:
    return C.Answers(scores, (scores >= threshold).astype(int))


def retrained(scores: np.ndarray, seed: int, scale: float = 0.02) -> np.ndarray:
    """A clean retrain: every score moves a little, at random."""
    noise = np.random.default_rng(seed).normal(scale=scale, size=len(scores))
    return np.clip(scores + noise, 0, 1)


def gate_with(frame, labels, old: C.Answers, new: C.Answers):
    groups = C.categorical_groups(frame, ["group"])
    losses = C.slice_losses("binary", SLICES.metric, labels, old, new, groups, {"group": 30})
    checks = C.slice_checks(losses, SLICES.metric, SLICES.max_drop, SLICES.min_z)
    groups += C.numeric_groups(frame, ["age"], 5)
    report = C.answer_changes("binary", frame, old, new, groups, CHANGES.min_rows, CHANGES.score_bins)
    checks += C.change_checks(report, "golden set", CHANGES.max_shift, CHANGES.min_z)
    golden = {"challenger": METRICS, "champion": METRICS, "checks": checks}
    return decide(METRICS, METRICS, CONFIG, golden=golden)


@pytest.mark.parametrize("seed", range(5))
def test_clean_retrains_pass_the_golden_checks(seed):
    frame, labels, scores = population(seed)
    # A clean retrain that also moved its decision threshold: many borderline answers flip one way.
    decision = gate_with(frame, labels, answers(scores, 0.40), answers(retrained(scores, seed), 0.45))
    assert decision.blessed, decision.reasons
    kinds = {c["kind"] for c in decision.checks if c["passed"]}
    assert {"golden_change", "slice", "answer_change"} <= kinds


def test_a_loss_aimed_at_one_group_fails_the_slice_and_answer_checks_naming_it():
    frame, labels, scores = population(1)
    poisoned = retrained(scores, 1)
    target = (frame["group"] == "b").to_numpy()
    poisoned[target] = np.clip(poisoned[target] - 0.12, 0, 1)  # what a label flip on group b does

    decision = gate_with(frame, labels, answers(scores), answers(poisoned))

    assert not decision.blessed
    failed = [c for c in decision.checks if c["passed"] is False]
    assert {c["kind"] for c in failed} == {"slice", "answer_change"}
    assert any(c.get("slice") == "group=b" for c in failed)
    assert any(c.get("group") == "group=b" for c in failed)
    assert any("slice group=b" in r and "[gate.slices.max_drop]" in r for r in decision.reasons)
    # The aggregate checks alone would have blessed it: the slice and answer checks are what stop it.
    assert decide(METRICS, METRICS, CONFIG, golden={"challenger": METRICS, "champion": METRICS}).blessed


def test_a_small_slice_losing_a_few_rows_is_noise_not_a_failure():
    """Recall on a 12-positive slice drops by 3 answers (25%): beyond max_drop, but not beyond noise."""
    labels = np.array([1] * 12 + [0] * 28)
    frame = pd.DataFrame({"group": ["tiny"] * 40})
    old = C.Answers(np.full(40, 0.9), np.array([1] * 12 + [0] * 28))
    new = C.Answers(np.full(40, 0.9), np.array([0, 0, 0] + [1] * 9 + [0] * 28))
    losses = C.slice_losses("binary", "recall", labels, old, new, C.categorical_groups(frame, ["group"]), {})
    assert losses[0]["loss"] == pytest.approx(0.25) and losses[0]["z"] == pytest.approx(3 / 3 ** 0.5, abs=1e-3)
    assert C.slice_checks(losses, "recall", 0.05, 4.0)[0]["passed"] is True
    # The same loss spread over 40 times as many rows is not noise.
    many = {k: np.tile(v, 40) for k, v in (("labels", labels), ("old", old.decision), ("new", new.decision))}
    losses = C.slice_losses("binary", "recall", many["labels"], C.Answers(np.tile(old.score, 40), many["old"]),
                            C.Answers(np.tile(new.score, 40), many["new"]),
                            C.categorical_groups(pd.DataFrame({"group": ["big"] * 1600}), ["group"]), {})
    assert C.slice_checks(losses, "recall", 0.05, 4.0)[0]["passed"] is False


def test_a_recalibrated_model_is_not_a_concentrated_change():
    """A retrain that recalibrates (mid scores move down, answers flip at a moved threshold) blames
    no group, even the one holding most mid-score rows: shifts are compared among rows scored alike."""
    frame, labels, scores = population(2)
    middle = (scores > 0.3) & (scores < 0.6)
    frame.loc[middle, "group"] = "c"
    recalibrated = scores ** 1.3
    report = C.answer_changes("binary", frame, answers(scores, 0.4), answers(recalibrated, 0.45),
                              C.categorical_groups(frame, ["group"]), 100, 20)
    c = next(g for g in report["groups"] if g["value"] == "c")
    assert c["down"] > 100 and abs(c["shift"]) < 0.015
    assert C.change_checks(report, "golden set", 0.015, 6.0)[0]["passed"] is True


def test_examples_show_changed_rows_with_both_answers():
    frame, _, scores = population(3, n=200)
    new = scores.copy()
    new[:3] = 1 - new[:3]
    rows = C.examples(frame, np.ones(200, dtype=bool), answers(scores), answers(new), ["group", "age"])
    assert rows and all(r["champion_answer"] != r["candidate_answer"] for r in rows)
    assert set(rows[0]["row"]) == {"group", "age"}


def test_numeric_groups_are_quantile_ranges_with_ties_merged():
    frame = pd.DataFrame({"gain": [0] * 80 + list(range(1, 21))})
    groups = C.numeric_groups(frame, ["gain"], 5)
    assert sum(int(m.sum()) for _, _, m in groups) == 100
    first = groups[0][2]
    assert first[:80].all() and len(groups) >= 2


def test_unknown_task_or_metric_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="soft_recall"):
        C.slice_metric("binary", "f2")
    with pytest.raises(ValueError, match="not defined for a 'ranking' task"):  # regression is a task now
        C.signed_change("ranking", answers(np.zeros(2)), answers(np.zeros(2)))


@pytest.mark.parametrize("config, message", [
    ({"slices": {"max_dorp": 0.1}}, "unknown gate.slices keys"),
    ({"slices": {"max_drop": -0.1}}, "gate.slices.max_drop must not be negative"),
    ({"answer_changes": {"min_rows": 2.5}}, "gate.answer_changes.min_rows must be a whole number"),
    ({"answer_changes": {"enabled": "yes"}}, "gate.answer_changes.enabled must be true or false"),
])
def test_malformed_comparison_config_names_the_key(config, message):
    with pytest.raises(ValueError, match=message):
        parse_config(config)


def test_golden_change_thresholds_fail_on_the_golden_set_alone():
    golden = {"challenger": {"roc_auc": 0.88}, "champion": {"roc_auc": 0.90}, "checks": []}
    decision = decide(METRICS, METRICS, CONFIG, golden=golden)
    assert not decision.blessed
    assert decision.reasons == [next(r for r in decision.reasons if r.startswith("golden_change check failed"))]
    assert "(golden set)" in decision.reasons[0]
