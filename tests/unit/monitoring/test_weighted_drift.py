"""Drift judged by what the model leans on (issue 19, item 5), on a real model of the bundled Adult data.

The issue's example: 1,000 requests whose ages are all 15 years older and whose hours per week are
10 higher. Counted column by column, 2 of 14 columns drift (0.14, under the 0.2 threshold: "no
drift"), and the 14 include ``fnlwgt`` and ``education``, which the model never reads. Weighed by
the model's permutation importance, the two columns carry more than a fifth of what the model
uses: drift; and the model's own answers moved too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from mlops_template.core.artifacts import CARD_TYPES_KEY, model_types, save_model
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec, build_features, feature_spec_from
from mlops_template.core.io import read_json, write_json
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.tasks import task_of
from mlops_template.monitoring import Window
from mlops_template.monitoring.alerts import LOG_FILE, AlertSink
from mlops_template.monitoring.drift import column_weights, run_drift_job
from mlops_template.monitoring.model import IMPORTANCE_FILE, Importance, read_importance
from mlops_template.pipeline.importance import permutation_importance
from mlops_template.pipeline.validation import validate_file
from mlops_template.serving.inference_log import InferenceLog
from tests.unit.monitoring.conftest import RAW_PATH

THRESHOLD = 0.2
DROP = ["fnlwgt", "education"]  # params.yaml's featurize.drop: never read by the model
DERIVED = {"capital_net": "capital_gain - capital_loss"}
WINDOW = 1000

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:evidently.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:litestar.*")]


def fit(spec: FeatureSpec, frame: pd.DataFrame, labels: np.ndarray) -> Pipeline:
    """The shape the project trains: imputation and one-hot encoding inside the pipeline, boosted trees."""
    encode = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                       ("encode", OneHotEncoder(handle_unknown="ignore", min_frequency=10, sparse_output=False))])
    preprocess = ColumnTransformer([("numeric", SimpleImputer(strategy="median"), spec.numeric_columns),
                                    ("categorical", encode, list(spec.categorical))])
    model = Pipeline([("preprocess", preprocess),
                      ("estimator", HistGradientBoostingClassifier(max_iter=100, random_state=0))])
    return model.fit(build_features(frame, spec), labels)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """OpenMP's threads spin against each other on a shared 2-core machine (a 3 s fit took 2 minutes)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def adult(_one_thread, contract: Contract, samples, tmp_path_factory) -> dict:
    """A model package of the bundled Adult data (model, checksum, spec, card, importance) and the
    rows it was not trained on."""
    rows = validate_file(RAW_PATH, contract).valid.drop(samples["reference"].index)
    rows = rows.sample(frac=1.0, random_state=3)
    train, held_out, window = rows.iloc[:12000], rows.iloc[12000:15000], rows.iloc[15000:]
    task = task_of(contract)
    spec = feature_spec_from(contract, DROP, DERIVED)
    model = fit(spec, train, task.encode(train[contract.target]))
    package = tmp_path_factory.mktemp("package")
    save_model(model, package / MODEL_FILE)
    write_json(package / MODEL_CARD_FILE, {CARD_TYPES_KEY: model_types(package / MODEL_FILE)})
    spec.to_json(package / FEATURE_SPEC_FILE)
    # as the evaluate stage computes it for metrics/importance.json and the package
    importance = permutation_importance(lambda rows: task.predict(model, build_features(rows, spec)), held_out,
                                        task.encode(held_out[contract.target]), task,
                                        [c.name for c in contract.input_columns], spec.source_columns)
    write_json(package / IMPORTANCE_FILE, importance)
    return {"package": package, "model": model, "spec": spec, "task": task, "window": window}


def older_and_longer_hours(adult: dict, contract: Contract) -> pd.DataFrame:
    """1,000 unseen rows, every age 15 years higher and every hours-per-week 10 higher (rows whose
    shifted values the contract still admits, as the service would only log those)."""
    spec = {c.name: c for c in contract.columns}
    rows = adult["window"]
    rows = rows[(rows["age"] + 15 <= spec["age"].max) & (rows["hours_per_week"] + 10 <= spec["hours_per_week"].max)]
    shifted = rows.head(WINDOW).copy()
    shifted["age"] += 15
    shifted["hours_per_week"] += 10
    return shifted


def log_answers(directory: Path, frame: pd.DataFrame, adult: dict, contract: Contract) -> Path:
    """Log ``frame`` as the service would: every input sent, the model's real answer beside it."""
    task = adult["task"]
    output = task.predict(adult["model"], build_features(frame, adult["spec"]))
    inputs = [c.name for c in contract.input_columns]
    features = frame[inputs].astype(object).where(frame[inputs].notna(), None).to_dict("records")
    entries = [{"request_id": f"r-{i}", "record_index": 0, "model_version": "adult:1", "features": row, **answer}
               for i, (row, answer) in enumerate(zip(features, task.answers(output, 0.5), strict=True))]
    with InferenceLog(directory) as log:
        log.submit(entries)
    return directory


def test_two_strong_columns_drifting_is_drift_once_weighed_by_importance(
        tmp_path, adult, contract, samples) -> None:
    reference = tmp_path / "reference.parquet"
    samples["reference"].to_parquet(reference)
    log_dir = log_answers(tmp_path / "log", older_and_longer_hours(adult, contract), adult, contract)
    importance = read_importance(adult["package"] / IMPORTANCE_FILE)

    def run(report_dir: Path, weights: Importance | None) -> dict:
        return run_drift_job(log_dir, reference, contract, Window(last_n=5000), THRESHOLD, report_dir,
                             AlertSink(report_dir), min_window_records=500, importance=weights,
                             package=adult["package"], task=adult["task"])

    # As the job judged before: every column counts the same, fnlwgt and education included.
    equal = run(tmp_path / "equal", None)
    assert sorted(equal["drifted_columns"]) == ["age", "hours_per_week"]
    assert equal["drift_share"] == round(2 / 14, 6) and equal["drift_detected"] is False
    assert equal["weighting"].startswith("equal") and equal["unused_columns"] == []

    # Weighed by what the model leans on: drift.
    summary = run(tmp_path / "weighed", importance)
    assert sorted(summary["drifted_columns"]) == ["age", "hours_per_week"]
    assert summary["unused_columns"] == DROP  # compared and reported ...
    assert summary["weights"]["fnlwgt"] == 0.0 and summary["weights"]["education"] == 0.0  # ... never counted
    assert summary["column_share"] == round(2 / 12, 6)  # by count, even without the unused: still under 0.2
    used = {c: max(v, 0.0) for c, v in importance.columns.items() if c not in DROP}
    expected = (used["age"] + used["hours_per_week"]) / sum(used.values())
    assert summary["drift_share"] == pytest.approx(expected, abs=1e-5)
    assert summary["drift_share"] > THRESHOLD and summary["drift_detected"] is True
    assert "importance (roc_auc)" in summary["weighting"]

    # The model's answers moved too: older people working longer are predicted richer.
    predictions = summary["predictions"]
    assert predictions["compared"] is True and predictions["drift_detected"] is True
    assert predictions["psi"] > predictions["threshold"]
    assert predictions["current"]["mean"] > predictions["reference"]["mean"]

    report_dir = tmp_path / "weighed"
    alerts = [(a["key"], a["status"]) for a in map(json.loads, (report_dir / LOG_FILE).read_text().splitlines())]
    assert alerts == [("drift", "firing"), ("prediction_drift", "firing")]
    textfile = (report_dir / "drift.prom").read_text()
    assert f"model_drift_share {summary['drift_share']}" in textfile
    assert 'model_drift_column_weight{column="fnlwgt"} 0.0' in textfile
    assert f"model_prediction_drift_psi {predictions['psi']}" in textfile
    assert "model_prediction_drift_detected 1.0" in textfile
    assert read_json(report_dir / "drift.json")["unused_columns"] == DROP


def test_like_reference_traffic_is_quiet_for_both_monitors(tmp_path, adult, contract, samples) -> None:
    """Unshifted unseen rows: neither the weighed inputs nor the answers drift, and nothing alerts."""
    reference = tmp_path / "reference.parquet"
    samples["reference"].to_parquet(reference)
    log_dir = log_answers(tmp_path / "log", samples["like_reference"], adult, contract)
    summary = run_drift_job(log_dir, reference, contract, Window(last_n=5000), THRESHOLD, tmp_path / "r",
                            AlertSink(tmp_path / "r"), importance=read_importance(adult["package"] / IMPORTANCE_FILE),
                            package=adult["package"], task=adult["task"])
    assert summary["drift_detected"] is False and summary["drift_share"] <= THRESHOLD
    assert summary["predictions"]["drift_detected"] is False
    assert summary["predictions"]["psi"] < 0.1
    assert not (tmp_path / "r" / LOG_FILE).exists()


def test_weights_follow_importance_and_say_how() -> None:
    importance = Importance({"a": 0.3, "b": 0.1, "c": -0.02, "d": 0.0}, ("d",), "rmse", "imp.json")
    weighed = column_weights(["a", "b", "c", "d", "e"], importance)
    assert weighed["weights"] == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0, "d": 0.0, "e": 0.0})
    assert weighed["unused"] == ["d"] and weighed["weighting"] == "importance (rmse) from imp.json"
    equal = column_weights(["a", "b"], None)
    assert equal["weights"] == {"a": 0.5, "b": 0.5} and equal["weighting"].startswith("equal: no importance file")
    nothing = column_weights(["a", "b"], Importance({"a": -0.1, "b": 0.0}, (), "rmse", "imp.json"))
    assert nothing["weights"] == {"a": 0.5, "b": 0.5} and "no compared column has a positive" in nothing["weighting"]
