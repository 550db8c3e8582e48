"""Monitoring for regression and multiclass models: live quality from labels, and the answers' own drift.

Small synthetic data whose figures are known by construction: predictions close to the labels (or
not), class answers with shares set by hand. Binary keeps its own tests (test_quality, test_drift).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlops_template.cli import main
from mlops_template.core.artifacts import CARD_TYPES_KEY, model_types, save_model
from mlops_template.core.contract import Contract, contract_from_dict
from mlops_template.core.exitcodes import ExitCode
from mlops_template.core.features import build_features, feature_spec_from
from mlops_template.core.io import read_json, write_json
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.tasks import task_of
from mlops_template.monitoring import Window
from mlops_template.monitoring.alerts import LOG_FILE, AlertSink
from mlops_template.monitoring.drift import run_drift_job
from mlops_template.monitoring.predictions import class_psi, prediction_drift
from mlops_template.monitoring.quality import compare, run_quality_job
from mlops_template.serving.inference_log import InferenceLog

N = 600
CLASSES = ("setosa", "versicolor", "virginica")

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:evidently.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:litestar.*")]


def contract_of(task: str) -> Contract:
    """Two numeric inputs, one categorical, and a target of ``task``."""
    target = ({"type": "float", "role": "target"} if task == "regression"
              else {"type": "str", "role": "target", "allowed": list(CLASSES)})
    return contract_from_dict({
        "name": f"toy-{task}",
        "columns": {"x": {"type": "float", "role": "numeric", "min": -100, "max": 100},
                    "z": {"type": "float", "role": "numeric", "min": -100, "max": 100},
                    "colour": {"type": "str", "role": "categorical", "allowed": ["red", "green", "blue"]},
                    "y": target},
        "target": {"column": "y", "task": task},
    })


def frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Inputs; the regression target is 3x + z + noise, the class is x's third (before ``shift``)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10, rows)
    z = rng.normal(0, 5, rows)
    data = pd.DataFrame({"x": x + shift, "z": z, "colour": rng.choice(["red", "green", "blue"], rows)})
    data["price"] = 3 * x + z + rng.normal(0, 2, rows)
    data["species"] = np.array(CLASSES)[np.digitize(x, [-4.3, 4.3])]
    return data


def log(directory: Path, answers: list[dict], features: pd.DataFrame | None = None) -> Path:
    """Log one record per answer (request ``q<i>``), with ``features`` when given."""
    rows = features[["x", "z", "colour"]].to_dict("records") if features is not None else [{}] * len(answers)
    entries = [{"request_id": f"q{i}", "record_index": 0, "model_version": "toy:1", "features": row, **answer}
               for i, (row, answer) in enumerate(zip(rows, answers, strict=True))]
    with InferenceLog(directory) as writer:
        writer.submit(entries)
    return directory


def labels_file(path: Path, labels: list) -> Path:
    pd.DataFrame({"request_id": [f"q{i}" for i in range(len(labels))], "record_index": 0,
                  "label": labels}).to_csv(path, index=False)
    return path


def quality(tmp_path: Path, contract: Contract, answers: list[dict], labels: list, baseline: dict) -> dict:
    write_json(tmp_path / "evaluation.json", baseline)
    return run_quality_job(log(tmp_path / "log", answers), labels_file(tmp_path / "labels.csv", labels), contract,
                           Window(), tmp_path / "evaluation.json", {}, 0.2, 100, tmp_path / "reports",
                           AlertSink(tmp_path / "reports"))


# --- live quality ------------------------------------------------------------------------------------

@pytest.mark.parametrize("noise, drops", [(1.0, False), (4.0, True)])
def test_regression_live_rmse_and_mae_against_the_evaluation(tmp_path, noise, drops) -> None:
    contract = contract_of("regression")
    rng = np.random.default_rng(1)
    actual = rng.normal(50, 10, N).round(3)
    predicted = actual + rng.normal(0, noise, N)
    rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
    mae = float(np.mean(np.abs(predicted - actual)))
    summary = quality(tmp_path, contract, [{"prediction": float(p)} for p in predicted], actual.tolist(),
                      {"task": "regression", "rmse": 1.0, "mae": 0.8})
    live = summary["live"]
    assert live["labelled_records"] == N
    assert live["rmse"] == pytest.approx(rmse, abs=1e-5) and live["mae"] == pytest.approx(mae, abs=1e-5)
    assert summary["baseline"] == {"rmse": 1.0, "mae": 0.8}
    # an error that rises is a drop: RMSE 4 against 1 is a 300% drop
    assert summary["drops"]["rmse"] == pytest.approx((rmse - 1.0) / 1.0, abs=1e-5)
    assert summary["quality_drop"] is drops
    alerts = tmp_path / "reports" / LOG_FILE
    assert alerts.exists() is drops
    textfile = (tmp_path / "reports" / "quality.prom").read_text()
    assert f"model_live_rmse {live['rmse']}" in textfile and "model_live_roc_auc" not in textfile


@pytest.mark.parametrize("right, drops", [(0.9, False), (0.5, True)])
def test_multiclass_live_accuracy_and_macro_f1_against_the_evaluation(tmp_path, right, drops) -> None:
    contract = contract_of("multiclass")
    task = task_of(contract)
    rng = np.random.default_rng(2)
    actual = rng.integers(0, 3, N)
    answered = np.where(rng.uniform(size=N) < right, actual, (actual + rng.integers(1, 3, N)) % 3)
    output = np.full((N, 3), 0.1)
    output[np.arange(N), answered] = 0.8
    summary = quality(tmp_path, contract, task.answers(output), [CLASSES[i] for i in actual],
                      {"task": "multiclass", "accuracy": 0.9, "macro_f1": 0.9, "log_loss": 0.4})
    live = summary["live"]
    assert live["accuracy"] == pytest.approx(accuracy_score(actual, answered), abs=1e-6)
    assert live["macro_f1"] == pytest.approx(f1_score(actual, answered, average="macro"), abs=1e-6)
    assert live["log_loss"] > 0
    assert set(summary["drops"]) == {"accuracy", "macro_f1"}
    assert summary["quality_drop"] is drops
    assert "model_live_macro_f1" in (tmp_path / "reports" / "quality.prom").read_text()


def test_labels_that_are_not_the_task_s_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="not numbers"):
        quality(tmp_path / "r", contract_of("regression"), [{"prediction": 1.0}], ["cheap"], {"rmse": 1.0})
    with pytest.raises(ValueError, match="not among the contract's classes"):
        quality(tmp_path / "m", contract_of("multiclass"), task_of(contract_of("multiclass")).answers(
            np.array([[0.2, 0.3, 0.5]])), ["daisy"], {"accuracy": 1.0})


def test_compare_reads_each_metric_in_its_direction() -> None:
    directions = {"rmse": "lower_is_better", "accuracy": "higher_is_better"}
    verdict = compare({"rmse": 1.3, "accuracy": 0.7}, {"rmse": 1.0, "accuracy": 0.8}, 0.2, directions)
    assert verdict["drops"] == {"rmse": pytest.approx(0.3), "accuracy": pytest.approx(0.125)}
    assert verdict["quality_drop"] is True
    better = compare({"rmse": 0.5}, {"rmse": 1.0}, 0.2, directions)
    assert better["drops"] == {"rmse": pytest.approx(-0.5)} and better["quality_drop"] is False


def test_quality_command_line_for_a_regression_contract(tmp_path, params_file, capsys) -> None:
    """The real command line: the contract's task decides the figures printed and compared."""
    contract_path = tmp_path / "toy.yaml"
    contract_path.write_text(yaml.safe_dump(contract_of("regression").raw))
    params = yaml.safe_load(params_file.read_text())
    params["data"]["contract"] = str(contract_path)
    params_file.write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(3)
    actual = rng.normal(50, 10, N)
    log(tmp_path / "log", [{"prediction": float(p)} for p in actual + rng.normal(0, 3, N)])
    write_json(tmp_path / "evaluation.json", {"task": "regression", "rmse": 1.0, "mae": 0.8})
    code = main(["quality", "--params", str(params_file), "--log-dir", str(tmp_path / "log"),
                 "--labels", str(labels_file(tmp_path / "labels.csv", actual.tolist())),
                 "--baseline", str(tmp_path / "evaluation.json")])
    assert code == ExitCode.ALERT
    line = capsys.readouterr().out.strip()
    assert line.startswith("quality: DROP; rmse ") and ", mae " in line and f"{N} labelled" in line


# --- the answers' own distribution --------------------------------------------------------------------

def test_prediction_drift_of_each_task() -> None:
    rng = np.random.default_rng(4)
    regression = task_of(contract_of("regression"))
    reference = rng.normal(10, 2, 3000)
    same = pd.DataFrame(regression.answers(rng.normal(10, 2, 1000)))
    moved = pd.DataFrame(regression.answers(rng.normal(12, 2, 1000)))
    assert prediction_drift(regression, reference, same, 0.2)["drift_detected"] is False
    found = prediction_drift(regression, reference, moved, 0.2)
    assert found["drift_detected"] is True and found["watched"] == "value"
    assert found["current"]["mean"] == pytest.approx(12, abs=0.3)

    multiclass = task_of(contract_of("multiclass"))

    def probabilities(shares: list[float], rows: int) -> np.ndarray:
        answered = rng.choice(3, rows, p=shares)
        out = np.full((rows, 3), 0.2)
        out[np.arange(rows), answered] = 0.6
        return out

    reference = probabilities([0.5, 0.3, 0.2], 3000)
    quiet = prediction_drift(multiclass, reference, pd.DataFrame(multiclass.answers(probabilities(
        [0.5, 0.3, 0.2], 1000))), 0.2)
    assert quiet["drift_detected"] is False and quiet["watched"] == "class shares"
    loud = prediction_drift(multiclass, reference, pd.DataFrame(multiclass.answers(probabilities(
        [0.15, 0.3, 0.55], 1000))), 0.2)
    assert loud["drift_detected"] is True
    assert loud["current"]["shares"]["virginica"] == pytest.approx(0.55, abs=0.05)
    # PSI of class shares, by hand: sum (q - p) ln(q / p)
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    expected = float(np.sum((q - p) * np.log(q / p)))
    as_classes = class_psi(pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20),
                           pd.Series(["a"] * 20 + ["b"] * 30 + ["c"] * 50))
    assert as_classes == pytest.approx(expected)

    binary = task_of(contract_from_dict({"columns": {"x": {"type": "float", "role": "numeric"},
                                                     "y": {"type": "str", "role": "target", "allowed": ["no", "yes"]}},
                                         "target": {"column": "y", "positive": "yes"}}))
    reference = rng.beta(2, 5, 3000)
    assert prediction_drift(binary, reference, pd.DataFrame(binary.answers(rng.beta(2, 5, 1000))),
                            0.2)["drift_detected"] is False
    assert prediction_drift(binary, reference, pd.DataFrame(binary.answers(rng.beta(5, 2, 1000))),
                            0.2)["drift_detected"] is True


def test_answers_of_another_task_are_refused() -> None:
    regression = task_of(contract_of("regression"))
    with pytest.raises(ValueError, match="'prediction'"):
        prediction_drift(regression, np.ones(10), pd.DataFrame([{"probability": 0.4, "label": "x"}]), 0.2)


def package_of(tmp_path: Path, task_name: str, train: pd.DataFrame) -> Path:
    """A model package (model, checksum, types, spec) of a linear model fitted on ``train``."""
    contract = contract_of(task_name)
    target = "price" if task_name == "regression" else "species"
    spec = feature_spec_from(contract)
    estimator = Ridge() if task_name == "regression" else LogisticRegression(max_iter=500)
    model = Pipeline([("prep", ColumnTransformer([("num", SimpleImputer(), spec.numeric_columns),
                                                  ("cat", OneHotEncoder(), list(spec.categorical))])),
                      ("estimator", estimator)])
    model.fit(build_features(train, spec), task_of(contract).encode(train[target].rename("y")))
    folder = tmp_path / f"package-{task_name}"
    folder.mkdir()
    save_model(model, folder / MODEL_FILE)
    write_json(folder / MODEL_CARD_FILE, {CARD_TYPES_KEY: model_types(folder / MODEL_FILE)})
    spec.to_json(folder / FEATURE_SPEC_FILE)
    return folder


@pytest.mark.parametrize("task_name", ["regression", "multiclass"])
def test_drift_job_compares_the_served_answers_with_the_model_s_on_the_reference(tmp_path, task_name) -> None:
    """The job scores the reference with the package's model; a window whose x moved gets other answers."""
    contract = contract_of(task_name)
    task = task_of(contract)
    package = package_of(tmp_path, task_name, frame(2000, 5))
    reference = tmp_path / "reference.parquet"
    frame(3000, 6).to_parquet(reference)
    from mlops_template.core.artifacts import load_model
    from mlops_template.core.features import FeatureSpec

    model, spec = load_model(package / MODEL_FILE), FeatureSpec.from_json(package / FEATURE_SPEC_FILE)
    results = {}
    for name, shift in (("same", 0.0), ("moved", 8.0)):
        rows = frame(1000, 7, shift)
        answers = task.answers(task.predict(model, build_features(rows, spec)))
        log_dir = log(tmp_path / f"log-{name}", answers, rows)
        results[name] = run_drift_job(log_dir, reference, contract, Window(), 0.2, tmp_path / name,
                                      AlertSink(tmp_path / name), package=package, task=task)
    assert results["same"]["predictions"]["drift_detected"] is False
    assert results["moved"]["predictions"]["drift_detected"] is True
    assert results["moved"]["predictions"]["psi"] > 0.2 > results["same"]["predictions"]["psi"]
    assert results["moved"]["drifted_columns"] == ["x"]
    alerts = [json.loads(line)["key"] for line in (tmp_path / "moved" / LOG_FILE).read_text().splitlines()]
    assert alerts == ["drift", "prediction_drift"]
    assert read_json(tmp_path / "moved" / "drift.json")["predictions"]["rows_reference"] == 3000


def test_a_log_of_another_task_leaves_the_inputs_verdict_standing(tmp_path) -> None:
    """Records a binary model logged, judged against a regression package: the answers are not
    compared (and the report says why), the input drift is still reported."""
    contract = contract_of("regression")
    package = package_of(tmp_path, "regression", frame(500, 8))
    reference = tmp_path / "reference.parquet"
    frame(1000, 9).to_parquet(reference)
    rows = frame(600, 10)
    log_dir = log(tmp_path / "log", [{"probability": 0.3, "label": "no"}] * len(rows), rows)
    summary = run_drift_job(log_dir, reference, contract, Window(), 0.2, tmp_path / "r", AlertSink(tmp_path / "r"),
                            package=package, task=task_of(contract))
    assert summary["predictions"]["compared"] is False
    assert "'prediction'" in summary["predictions"]["reason"]
    assert summary["drift_detected"] is False and summary["rows_current"] == 600


def test_drift_command_reads_the_package_and_its_importance(tmp_path, params_file, capsys) -> None:
    """The real command line on a regression contract: the package named in params gives the model and
    its importance. Only z moved, a column the model barely uses: counted as one column of three it
    would alert (1/3 > 0.2); weighed by importance it does not, and the answers barely moved."""
    contract = contract_of("regression")
    contract_path = tmp_path / "toy.yaml"
    contract_path.write_text(yaml.safe_dump(contract.raw))
    train, held_out = frame(2000, 11), frame(1000, 12)
    package = package_of(tmp_path, "regression", train)
    from mlops_template.core.artifacts import load_model
    from mlops_template.core.features import FeatureSpec

    model, spec = load_model(package / MODEL_FILE), FeatureSpec.from_json(package / FEATURE_SPEC_FILE)
    task = task_of(contract)

    def rmse(rows: pd.DataFrame) -> float:
        return float(np.sqrt(np.mean((task.predict(model, build_features(rows, spec)) - rows["price"]) ** 2)))

    base = rmse(held_out)
    shuffled = {c: rmse(held_out.assign(**{c: held_out[c].sample(frac=1.0, random_state=0).to_numpy()})) - base
                for c in ("x", "z", "colour")}
    write_json(package / "importance.json", {"metric": "rmse", "columns": shuffled, "unused": []})
    params = yaml.safe_load(params_file.read_text())
    params["data"]["contract"] = str(contract_path)
    params["monitoring"]["model_package"] = str(package)
    params["monitoring"]["min_window_records"] = 100
    params_file.write_text(yaml.safe_dump(params))
    reference = tmp_path / "reference.parquet"
    frame(3000, 13).to_parquet(reference)
    rows = frame(1000, 14).assign(z=lambda f: f["z"] + 8.0)
    log(tmp_path / "log", task.answers(task.predict(model, build_features(rows, spec))), rows)
    code = main(["drift", "--params", str(params_file), "--log-dir", str(tmp_path / "log"),
                 "--reference", str(reference)])
    line = capsys.readouterr().out.strip()
    assert code == ExitCode.OK, line
    saved = read_json(tmp_path / "reports" / "drift.json")
    assert saved["drifted_columns"] == ["z"] and saved["column_share"] == round(1 / 3, 6)
    assert saved["drift_share"] == saved["weights"]["z"] < 0.2
    assert saved["weighting"] == f"importance (rmse) from {package / 'importance.json'}"
    assert saved["predictions"]["compared"] is True and saved["predictions"]["drift_detected"] is False
    assert line.startswith("drift: none; share ") and "predictions psi " in line


@pytest.mark.parametrize("task_name", ["regression", "multiclass", "binary"])
def test_logged_answers_give_back_the_output_and_name_live_metrics_the_task_computes(task_name) -> None:
    """Task.output_of_answers inverts Task.answers (what the log keeps), and every live metric is a metric."""
    raw = contract_of(task_name).raw if task_name != "binary" else {
        "columns": {"x": {"type": "float", "role": "numeric"},
                    "y": {"type": "str", "role": "target", "allowed": ["no", "yes"]}},
        "target": {"column": "y", "positive": "yes"}}
    task = task_of(contract_from_dict(raw))
    rng = np.random.default_rng(9)
    if task_name == "multiclass":
        output = rng.dirichlet(np.ones(3), 50)
        labels = rng.integers(0, 3, 50)
    elif task_name == "regression":
        output, labels = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    else:
        output, labels = rng.uniform(size=50), rng.integers(0, 2, 50)
    logged = pd.DataFrame(json.loads(json.dumps(task.answers(output))))  # as the log writes and reads it
    assert np.allclose(task.output_of_answers(logged), output)
    metrics = task.metrics(labels, output)
    assert set(task.live_metrics) - {"value_per_row"} <= set(metrics)
    assert set(task.live_metrics.values()) <= {"higher_is_better", "lower_is_better"}
    watched = task.watched_prediction(output)
    assert len(watched) == 50
    if task_name == "multiclass":
        assert watched.tolist() == [CLASSES[i] for i in output.argmax(axis=1)]


def test_only_the_package_s_version_is_compared_during_a_canary(tmp_path) -> None:
    """A challenger (v8) answering from other inputs shares the window with the champion (v7): the
    champion's package is compared with the champion's answers only."""
    contract = contract_of("regression")
    task = task_of(contract)
    package = package_of(tmp_path, "regression", frame(2000, 15))
    reference = tmp_path / "reference.parquet"
    frame(3000, 16).to_parquet(reference)
    from mlops_template.core.artifacts import load_model
    from mlops_template.core.features import FeatureSpec

    model, spec = load_model(package / MODEL_FILE), FeatureSpec.from_json(package / FEATURE_SPEC_FILE)
    champion, challenger = frame(600, 17), frame(600, 18, shift=15.0)
    entries = []
    for version, rows in (("7", champion), ("8", challenger)):
        answers = task.answers(task.predict(model, build_features(rows, spec)))
        entries += [{"request_id": f"{version}-{i}", "record_index": 0, "model_version": version,
                     "features": row, **answer}
                    for i, (row, answer) in enumerate(zip(rows[["x", "z", "colour"]].to_dict("records"), answers,
                                                          strict=True))]
    with InferenceLog(tmp_path / "log") as writer:
        writer.submit(entries)

    def run(version: str | None) -> dict:
        return run_drift_job(tmp_path / "log", reference, contract, Window(), 0.2, tmp_path / f"r{version}",
                             AlertSink(tmp_path / f"r{version}"), package=package, task=task, model_version=version)

    mixed, champion_only = run(None), run("7")
    assert mixed["predictions"]["rows_current"] == 1200 and mixed["predictions"]["drift_detected"] is True
    assert champion_only["predictions"]["rows_current"] == 600
    assert champion_only["predictions"]["drift_detected"] is False
    assert champion_only["predictions"]["model_version"] == "7"
    assert run("9")["predictions"] == {"compared": False, "reason": "no record of model version 9 in the window",
                                      "psi": None, "threshold": 0.2, "drift_detected": False}
