"""Unit tests for mlops_template.gate."""

from __future__ import annotations

import json

import pytest

from mlops_template.gate import decide

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
