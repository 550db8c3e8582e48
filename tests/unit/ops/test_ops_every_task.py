"""Canary, experiments view, promotion records and retrain's commit subject for every task.

Each speaks the task's primary metric (binary ROC AUC, multiclass log loss, regression RMSE) and its
live metrics where binary assumed ROC AUC; binary's own output is held unchanged by the older tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_template.core.contract import contract_from_dict
from mlops_template.core.io import write_json
from mlops_template.core.params import DeploySection
from mlops_template.core.tasks import task_of
from mlops_template.monitoring.quality import live_quality
from mlops_template.ops import records
from mlops_template.ops.canary import VersionFigures, judge
from mlops_template.ops.experiments import METRICS, experiment_rows, metrics_of, table
from mlops_template.ops.promotion import primary_metric_field as record_metric
from mlops_template.ops.retrain import commit_message
from mlops_template.serving.inference_log import InferenceLog, read_log

DEFAULTS = DeploySection(model_name="m", service_name="s")
CLASSES = ("low", "mid", "high")
RAW = {
    "regression": {"columns": {"x": {"type": "float", "role": "numeric"}, "y": {"type": "float", "role": "target"}},
                   "target": {"column": "y", "task": "regression"}},
    "multiclass": {"columns": {"x": {"type": "float", "role": "numeric"},
                               "y": {"type": "str", "role": "target", "allowed": list(CLASSES)}},
                   "target": {"column": "y", "task": "multiclass"}},
    "binary": {"columns": {"x": {"type": "float", "role": "numeric"},
                           "y": {"type": "str", "role": "target", "allowed": ["no", "yes"]}},
               "target": {"column": "y", "positive": "yes"}},
}
FIELDS = dict(model_name="m", model_version="3", mlflow_run_id="r", bento_tag="svc:b", model_tag="m:t",
              archive="models/serving/champion.bento", archive_sha256="a", sha256="s", threshold=None,
              test_roc_auc=None, git_revision="g", deployed_at="2026-12-01T00:00:00+00:00")


def test_experiments_table_shows_the_task_s_metrics():
    assert metrics_of(task_of(contract_from_dict(RAW["binary"]))) == METRICS  # binary: as it always was
    regression = metrics_of(task_of(contract_from_dict(RAW["regression"])))
    assert [name for name, _, _ in regression] == ["rmse", "mae", "value/row"]
    assert [name for name, _, _ in metrics_of(task_of(contract_from_dict(RAW["multiclass"])))] == [
        "log_loss", "accuracy", "value/row"]
    shown = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": {"train": {"seed": 1}}}},
                                           "metrics": {"metrics/evaluation.json": {"data": {
                                               "rmse": 3.25, "mae": 2.5, "value_per_row": -2.9}}}}}]
    text = table(experiment_rows(shown), metrics=regression)
    header, _, row = text.splitlines()
    assert header.split()[1:4] == ["rmse", "mae", "value/row"]
    assert row.split()[1:4] == ["3.2500", "2.5000", "-2.9000"]


def test_retrain_commit_subject_names_the_primary_metric():
    result = {"model_name": "m", "candidate_version": "5", "promoted": True, "rmse": 3.14159, "champion_version": "4"}
    assert commit_message(result, "rmse") == "retrain: m v5 promoted (rmse 3.142)"
    assert commit_message({**result, "rmse": None}, "rmse").endswith("(no rmse)")


def test_outcome_of_pipeline_carries_the_primary_metric(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "metrics" / "gate.json", {"candidate": {"model_version": "5"}, "blessed": True,
                                                    "reasons": ["ok"]})
    write_json(tmp_path / "metrics" / "evaluation.json", {"task": "regression", "rmse": 3.2, "mae": 2.1})
    outcome = records.outcome_of_pipeline("m", "rmse")
    assert outcome["rmse"] == 3.2 and "roc_auc" not in outcome
    assert records.outcome_of_pipeline("m")["roc_auc"] is None  # binary's key, as before


@pytest.mark.parametrize("task, metric", [("regression", "rmse"), ("multiclass", "log_loss"), ("binary", None)])
def test_promotion_records_the_primary_metric(tmp_path, task, metric):
    contract = tmp_path / "contract.yaml"
    contract.write_text(yaml.safe_dump(RAW[task]))
    evaluation = {"rmse": 3.2, "log_loss": 0.41, "roc_auc": 0.9, "threshold": 0.4}
    extra = record_metric(str(contract), evaluation)
    if metric is None:
        assert extra == {}  # binary records keep test_roc_auc only
        return
    assert extra == {"test_metric": {"name": metric, "value": evaluation[metric]}}
    record = records.deployment(**FIELDS, **extra)
    assert record["test_metric"] == {"name": metric, "value": evaluation[metric]}
    path = tmp_path / "champion.json"
    records.write_record(records.decision("promote", None, "3", ["ok"]), champion=record, path=path)
    assert records.read_record(path)["champion"] == record
    assert records.full_deployment(record) == record
    with pytest.raises(records.RecordError, match="unknown"):
        records.deployment(**FIELDS, colour="blue")


def logged_versions(tmp_path, champion_noise: float, challenger_noise: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regression predictions of two versions for the same 400 labelled requests each."""
    rng = np.random.default_rng(0)
    actual = rng.normal(100, 20, 800)
    noise = np.where(np.arange(800) < 400, champion_noise, challenger_noise)
    entries = [{"request_id": f"r{i}", "record_index": 0, "model_version": "7" if i < 400 else "8",
                "features": {"x": 1.0}, "prediction": float(a + rng.normal(0, n))}
               for i, (a, n) in enumerate(zip(actual, noise, strict=True))]
    with InferenceLog(tmp_path / "log") as log:
        log.submit(entries)
    truth = pd.DataFrame({"request_id": [f"r{i}" for i in range(800)], "record_index": 0,
                          "label": [str(a) for a in actual]})
    return read_log(tmp_path / "log"), truth


@pytest.mark.parametrize("challenger_noise, action", [(12.0, "rollback"), (4.0, "promote")])
def test_canary_judges_a_regression_challenger_by_rmse_and_mae(tmp_path, challenger_noise, action):
    """A challenger whose errors are larger (RMSE up ~50%) is rolled back; a more accurate one promoted."""
    contract = contract_from_dict(RAW["regression"])
    log, truth = logged_versions(tmp_path, 8.0, challenger_noise)
    quality = {str(v): live_quality(part, truth, contract, {}) for v, part in log.groupby("model_version")}
    assert quality["8"]["labelled_records"] == 400 and quality["8"]["rmse"] > 0
    figures = {v: VersionFigures(success=400, latency_sum=4.0, latency_count=400) for v in ("7", "8")}
    decision = judge("7", "8", figures, DEFAULTS, quality, 0.2, 100, task_of(contract).live_metrics)
    assert decision.action == action, decision.reasons
    assert any(r.startswith("live quality drop vs champion") for r in decision.reasons)
    assert decision.figures["8"]["quality"]["rmse"] == quality["8"]["rmse"]
