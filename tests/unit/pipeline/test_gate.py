"""Unit tests for mlops_template.gate."""

from __future__ import annotations

import json

import pytest

from mlops_template.pipeline.gate import decide

CONFIG = {
    "value_thresholds": {"roc_auc": {"lower": 0.85}, "log_loss": {"upper": 0.45}},
    "change_thresholds": {
        "roc_auc": {"direction": "higher_is_better", "absolute": -0.005},
        "log_loss": {"direction": "lower_is_better", "absolute": 0.005},
    },
}
GOOD = {"roc_auc": 0.92, "log_loss": 0.30}


def _check(decision, kind, metric):
    return next(c for c in decision.checks if c["kind"] == kind and c["metric"] == metric)


def test_blessed_when_every_check_passes():
    champion = {"roc_auc": 0.921, "log_loss": 0.302}  # slightly better, but within tolerance
    decision = decide(GOOD, champion, CONFIG)
    assert decision.blessed
    assert len(decision.checks) == 4 and all(c["passed"] for c in decision.checks)
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith("blessed")
    change = _check(decision, "change", "roc_auc")
    assert change["observed"] == pytest.approx(-0.001)
    data = decision.to_dict()
    assert data["champion"] == champion
    json.dumps(data, allow_nan=False)


def test_value_threshold_failure():
    decision = decide({"roc_auc": 0.80, "log_loss": 0.30}, None, CONFIG)
    assert not decision.blessed
    failed = _check(decision, "value", "roc_auc")
    assert failed["passed"] is False and failed["observed"] == 0.80
    assert len(decision.reasons) == 1 and "roc_auc" in decision.reasons[0]


def test_value_threshold_bounds_are_inclusive():
    config = {"value_thresholds": {"accuracy": {"lower": 0.8, "upper": 0.9}}}
    assert decide({"accuracy": 0.8}, None, config).blessed
    assert decide({"accuracy": 0.9}, None, config).blessed
    assert not decide({"accuracy": 0.91}, None, config).blessed


def test_change_threshold_failure_against_champion():
    champion = {"roc_auc": 0.93, "log_loss": 0.28}
    decision = decide(GOOD, champion, CONFIG)
    assert not decision.blessed
    assert _check(decision, "value", "roc_auc")["passed"]
    roc = _check(decision, "change", "roc_auc")
    loss = _check(decision, "change", "log_loss")
    assert roc["passed"] is False and roc["observed"] == pytest.approx(-0.01)
    assert loss["passed"] is False and loss["observed"] == pytest.approx(0.02)
    assert len(decision.reasons) == 2


def test_change_exactly_at_the_limit_passes():
    config = {"change_thresholds": {"roc_auc": {"direction": "higher_is_better", "absolute": -0.005}}}
    decision = decide({"roc_auc": 0.915}, {"roc_auc": 0.92}, config)
    assert decision.blessed
    assert decision.checks[0]["observed"] == -0.005


def test_no_champion_skips_change_thresholds():
    decision = decide(GOOD, None, CONFIG)
    assert decision.blessed
    skipped = [c for c in decision.checks if c["skipped"]]
    assert {c["metric"] for c in skipped} == {"roc_auc", "log_loss"}
    assert all(c["kind"] == "change" and c["passed"] is None and c["reason"] for c in skipped)
    assert "skipped" in decision.reasons[0]
    assert decision.to_dict()["champion"] is None
    assert not decide({"roc_auc": 0.5, "log_loss": 0.3}, None, CONFIG).blessed


@pytest.mark.parametrize("config", [{}, {"value_thresholds": {}, "change_thresholds": None}])
def test_no_thresholds_is_not_blessed(config):
    decision = decide(GOOD, {"roc_auc": 0.5}, config)
    assert not decision.blessed
    assert decision.checks == []
    assert "no thresholds configured" in decision.reasons[0]


def test_missing_metric_fails_with_reason():
    decision = decide({"roc_auc": 0.92}, {"roc_auc": 0.92}, CONFIG)
    assert not decision.blessed
    value = _check(decision, "value", "log_loss")
    assert value["passed"] is False and "log_loss is missing from the challenger" in value["reason"]
    champion_lacks = decide(GOOD, {"roc_auc": 0.92}, CONFIG)
    change = _check(champion_lacks, "change", "log_loss")
    assert change["passed"] is False and "champion" in change["reason"]


def test_none_metric_fails_rather_than_crashing():
    decision = decide({"roc_auc": None, "log_loss": 0.3}, None, CONFIG)
    assert not decision.blessed
    assert "not a finite number" in _check(decision, "value", "roc_auc")["reason"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"change_thresholds": {"roc_auc": {"direction": "up", "absolute": 0.0}}}, "direction"),
        ({"change_thresholds": {"roc_auc": {"direction": "higher_is_better"}}}, "absolute"),
        ({"value_thresholds": {"roc_auc": {"min": 0.8}}}, "lower"),
        ({"value_thresholds": {"roc_auc": {"lower": "high"}}}, "finite number"),
        ({"value_thresholds": {"roc_auc": {"lower": 0.9, "upper": 0.8}}}, "above upper"),
        ({"value_thresholds": [0.85]}, "mapping"),
    ],
)
def test_malformed_config_raises(config, message):
    with pytest.raises(ValueError, match=message):
        decide(GOOD, None, config)


# --- baseline thresholds: the default gate for any dataset -------------------------------------

DEFAULT_GATE = {
    "baseline_thresholds": {
        "log_loss": {"direction": "lower_is_better", "relative": -0.05},
        "roc_auc": {"direction": "higher_is_better", "absolute": 0.05},
    },
    "change_thresholds": {"roc_auc": {"direction": "higher_is_better", "absolute": -0.005}},
}
PRIOR = {"roc_auc": 0.5, "log_loss": 0.60}


def test_a_modest_model_on_another_dataset_beats_the_baseline():
    """ROC AUC 0.76 fails Adult's absolute 0.85 but is clearly better than knowing the base rate."""
    decision = decide({"roc_auc": 0.76, "log_loss": 0.52}, None, DEFAULT_GATE, PRIOR)
    assert decision.blessed, decision.reasons
    loss = _check(decision, "baseline", "log_loss")
    assert loss["relative"] == pytest.approx(-0.08 / 0.60) and loss["passed"]
    assert _check(decision, "change", "roc_auc")["skipped"]
    assert not decide({"roc_auc": 0.76, "log_loss": 0.52}, None, CONFIG).blessed


def test_baseline_checks_refuse_a_model_no_better_than_the_prior():
    decision = decide({"roc_auc": 0.53, "log_loss": 0.59}, None, DEFAULT_GATE, PRIOR)
    assert not decision.blessed
    assert {c["key"] for c in decision.checks if c["passed"] is False} == {
        "gate.baseline_thresholds.log_loss", "gate.baseline_thresholds.roc_auc"}
    assert all("[gate.baseline_thresholds." in r for r in decision.reasons)


def test_relative_limit_boundary_and_both_limits_together():
    at_limit = {"roc_auc": 0.7, "log_loss": 0.57}  # exactly 5% below the prior's 0.60
    assert _check(decide(at_limit, None, DEFAULT_GATE, PRIOR), "baseline", "log_loss")["passed"]
    both = {"baseline_thresholds": {"log_loss": {"direction": "lower_is_better", "absolute": -0.01,
                                                 "relative": -0.05}}}
    assert not decide({"log_loss": 0.585}, None, both, PRIOR).blessed  # absolute passes, relative fails
    assert decide({"log_loss": 0.56}, None, both, PRIOR).blessed


def test_baseline_checks_apply_even_with_a_champion_and_fail_without_a_baseline():
    champion = {"roc_auc": 0.75, "log_loss": 0.53}
    assert decide({"roc_auc": 0.76, "log_loss": 0.52}, champion, DEFAULT_GATE, PRIOR).blessed
    skipped = decide({"roc_auc": 0.76, "log_loss": 0.52}, None, DEFAULT_GATE, None)
    assert all(c["skipped"] for c in skipped.checks) and skipped.blessed is False
    assert "no check applied" in skipped.reasons[0] and "no baseline to compare with" in skipped.reasons[0]


@pytest.mark.parametrize("config", [
    {"baseline_thresholds": {"log_loss": {"direction": "lower_is_better"}}},
    {"baseline_thresholds": {"log_loss": {"direction": "down", "relative": -0.05}}},
    {"baseline_thresholds": {"log_loss": {"direction": "lower_is_better", "relativ": -0.05}}},
    {"value_threshold": {"roc_auc": {"lower": 0.8}}},
])
def test_malformed_gate_config_names_the_key(config):
    with pytest.raises(ValueError, match="gate"):
        decide(GOOD, None, config, PRIOR)
