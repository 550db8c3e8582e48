"""Training for every task: the same ``train.estimator`` names, a model card that says what was learnt.

For each task (binary on a skewed yes/no target, multiclass on scikit-learn's wine cultivars,
regression on its diabetes progression) and each estimator name, ``train_candidate`` fits, saves
with skops and writes the card; the saved file must load back through the exact-type allow-list
and predict what the fitted pipeline did. What a package ships for serving (``serving.json``) and
what a golden set records about its target follow the task too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.artifacts import load_model
from mlops_template.core.contract import contract_from_dict
from mlops_template.core.features import build_features, feature_spec_from
from mlops_template.core.params import ESTIMATOR_NAMES, ParamsError, TrainSection
from mlops_template.core.tasks import TASKS, task_of
from mlops_template.pipeline import golden
from mlops_template.pipeline.inference import infer_contract
from mlops_template.pipeline.packaging import _serving_config
from mlops_template.pipeline.training import train_candidate
from mlops_template.pipeline.validation import validate_frame

# Small, quick settings; every other key each estimator does not take is dropped with a warning.
HYPERPARAMETERS = {
    "linear": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 2, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 30},
    "lightgbm": {"n_estimators": 30, "min_child_samples": 5},
}


def wine_rows() -> tuple[pd.DataFrame, str]:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return frame, "target"


def diabetes_rows() -> tuple[pd.DataFrame, str]:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame, "target"


def binary_rows() -> tuple[pd.DataFrame, str]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=500)
    return pd.DataFrame({"x": x.round(4), "group": rng.choice(["a", "b", "c"], 500),
                         "churned": np.where(x + rng.normal(size=500) > 1.0, "yes", "no")}), "churned"


DATASETS = {"binary": binary_rows, "multiclass": wine_rows, "regression": diabetes_rows}


def prepared(task: str, tmp_path: Path):
    """Contract, feature spec (written to disk), and validated rows of the task's dataset."""
    frame, target = DATASETS[task]()
    text = frame.astype(str)
    contract = contract_from_dict(infer_contract(text, target=target).contract)
    assert contract.task == task
    valid = validate_frame(text, contract).valid
    spec = feature_spec_from(contract, [], {})
    spec_path = tmp_path / "feature_spec.json"
    spec.to_json(spec_path)
    return contract, spec, spec_path, valid


def test_every_task_offers_every_estimator_name() -> None:
    """params.yaml's names (checked without importing sklearn) are exactly what the tasks map."""
    for task in TASKS.values():
        assert set(task.estimators) == set(ESTIMATOR_NAMES), task.name


def test_train_section_checks_the_name_and_linear_reads_its_old_names_settings() -> None:
    legacy = {"estimator": "linear", "seed": 1, "hyperparameters": {"logistic_regression": {"C": 0.5}}}
    assert TrainSection.parse(legacy).chosen_hyperparameters == {"C": 0.5}
    own = {**legacy, "hyperparameters": {"linear": {"alpha": 2.0}, "logistic_regression": {"C": 0.5}}}
    assert TrainSection.parse(own).chosen_hyperparameters == {"alpha": 2.0}
    assert TrainSection.parse({**legacy, "estimator": "logistic_regression"}).chosen_hyperparameters == {"C": 0.5}
    with pytest.raises(ParamsError, match="train.estimator must be one of .*'linear'.*got 'xgboost'"):
        TrainSection.parse({**legacy, "estimator": "xgboost"})


@pytest.mark.parametrize("estimator", ["linear", "logistic_regression", "random_forest", "hist_gradient_boosting",
                                       "lightgbm"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_train_save_and_load_every_task_and_estimator(tmp_path, task, estimator) -> None:
    contract, spec, spec_path, valid = prepared(task, tmp_path)
    hyper = HYPERPARAMETERS["linear" if estimator == "logistic_regression" else estimator]
    cfg = TrainSection.parse({"estimator": estimator, "seed": 7, "hyperparameters": {estimator: hyper}})
    out = tmp_path / "candidate"
    candidate = train_candidate(cfg, "toy", contract, spec, valid, "0" * 64, out, spec_path)

    # The saved file loads through the allow-list and answers exactly as the fitted pipeline.
    loaded = load_model(out / "model.skops")
    solver = task_of(contract)
    features = build_features(valid.head(50), spec)
    np.testing.assert_allclose(solver.predict(loaded, features), solver.predict(candidate.pipeline, features))

    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card == candidate.card
    assert card["task"] == task and card["classes"] == list(contract.classes)
    assert set(card["train_metrics"]) == set(solver.headline_metrics)
    summary = card["training_data"]["target"]
    labels = solver.encode(valid[contract.target])
    assert summary == solver.target_summary(labels)
    if task == "binary":
        assert card["positive_class"] == "yes" and card["training_data"]["positive_share"] == summary["positive_share"]
        assert card["train_metrics"]["roc_auc"] > 0.7
    elif task == "multiclass":
        assert set(summary["class_shares"]) == {"barbera", "barolo", "grignolino"}
        assert card["train_metrics"]["accuracy"] > 0.8
    else:
        assert summary["mean"] == pytest.approx(labels.mean(), abs=1e-6) and card["positive_class"] is None
        assert card["train_metrics"]["rmse"] < labels.std()  # better than the mean on its own training rows


def test_a_fitted_regression_keeps_the_target_scale_and_a_multiclass_the_contract_order(tmp_path) -> None:
    contract, spec, spec_path, valid = prepared("multiclass", tmp_path)
    cfg = TrainSection.parse({"estimator": "linear", "seed": 0, "hyperparameters": {}})
    fitted = train_candidate(cfg, "wine", contract, spec, valid, "0" * 64, tmp_path / "m", spec_path).pipeline
    proba = task_of(contract).predict(fitted, build_features(valid, spec))
    assert proba.shape == (len(valid), 3) and np.allclose(proba.sum(axis=1), 1.0)
    named = np.array(contract.classes)[proba.argmax(axis=1)]
    assert (named == valid[contract.target].to_numpy()).mean() > 0.9


def test_serving_config_per_task(tmp_path) -> None:
    for task in ("binary", "multiclass", "regression"):
        contract, spec, spec_path, valid = prepared(task, tmp_path)
        path = tmp_path / f"{task}.yaml"
        path.write_text(json.dumps(contract.raw), encoding="utf-8")  # JSON is YAML
        cfg = TrainSection.parse({"estimator": "linear", "seed": 0, "hyperparameters": {}})
        out = tmp_path / f"{task}-model"
        card = train_candidate(cfg, "toy", contract, spec, valid, "0" * 64, out, spec_path).card
        threshold = 0.4 if task == "binary" else None
        serving = _serving_config(path, threshold, {"model_version": "3"}, out)
        assert serving["task"] == task and serving["classes"] == list(contract.classes)
        assert serving["target_summary"] == card["training_data"]["target"]
        assert serving["model_version"] == "3" and serving["threshold"] == threshold
        if task == "binary":
            assert (serving["positive_class"], serving["negative_class"]) == ("yes", "no")
        else:
            assert "positive_class" not in serving and "negative_class" not in serving
        assert "decision_values" not in serving
        if task == "multiclass":  # evaluate's value table ships with the model the service answers by
            k = len(contract.classes)
            table = [[float(a == p) * (a + 1) for p in range(k)] for a in range(k)]
            assert _serving_config(path, None, {}, out, table)["decision_values"] == table
    # Without a model folder (older callers), the summary is unknown and the rest as before.
    assert _serving_config(tmp_path / "binary.yaml", 0.5, {})["target_summary"] is None


def test_golden_set_records_the_targets_summary_per_task(tmp_path) -> None:
    contract, _, _, valid = prepared("regression", tmp_path)
    manifest = golden.freeze(valid, contract, 100, 1, "first", "ana", "test.parquet", tmp_path / "g")
    assert "positive_share" not in manifest and manifest["target"]["median"] is not None
    assert set(manifest["target"]["quantiles"]) >= {"0", "0.5", "1"}
    contract, _, _, valid = prepared("multiclass", tmp_path)
    manifest = golden.freeze(valid, contract, 100, 1, "first", "ana", "test.parquet", tmp_path / "m")
    assert sum(manifest["target"]["class_shares"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(golden.GoldenSetError, match="single target value"):
        regression, _, _, rows = prepared("regression", tmp_path)
        golden.freeze(rows.assign(target=5), regression, 100, 1, "", "ana", "t", tmp_path / "one")


def test_the_dask_engine_names_its_estimator_and_unknown_engines_are_refused() -> None:
    base = {"estimator": "lightgbm", "seed": 0, "hyperparameters": {}}
    assert TrainSection.parse({**base, "engine": "dask"}).engine == "dask"
    assert TrainSection.parse(base).engine == "single"
    with pytest.raises(ParamsError, match="train.engine: dask trains LightGBM.*set train.estimator: lightgbm"):
        TrainSection.parse({**base, "estimator": "hist_gradient_boosting", "engine": "dask"})
    with pytest.raises(ParamsError, match="train.engine must be one of \\['single', 'dask'\\], got 'spark'"):
        TrainSection.parse({**base, "engine": "spark"})
    with pytest.raises(ParamsError, match="partition_mb"):
        TrainSection.parse({**base, "partition_mb": 0})


def test_dask_settings_come_from_the_environment(monkeypatch) -> None:
    from mlops_template.pipeline.distributed import DaskSettings

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("DASK_LOCAL_WORKERS", "3")
    monkeypatch.setenv("DASK_WORKER_MEMORY", "2GiB")
    assert DaskSettings.from_env() == DaskSettings(None, 3, "2GiB")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", " tcp://dask-scheduler:8786 ")
    assert DaskSettings.from_env().scheduler_address == "tcp://dask-scheduler:8786"
    for bad in ("two", "0"):
        monkeypatch.setenv("DASK_LOCAL_WORKERS", bad)
        with pytest.raises(ValueError, match="DASK_LOCAL_WORKERS"):
            DaskSettings.from_env()
