"""evaluate: test-set metrics, business value, slices, plots, and the promotion gate."""

import logging
import sys
import tempfile
from pathlib import Path

import pandas as pd

from mlops_template import tracking
from mlops_template.config import load_params, read_json, setup_logging, write_json
from mlops_template.evaluation import (
    assert_finite,
    baseline_metrics,
    best_threshold,
    business_value,
    calibration_points,
    confusion_rows,
    pr_points,
    roc_points,
    score_metrics,
    slice_metrics,
)
from mlops_template.features import FeatureSpec, build_features
from mlops_template.gate import decide
from mlops_template.model import load_model
from mlops_template.params_check import contract_or_exit

TEST = "data/features/test.parquet"
CANDIDATE = Path("models/candidate")
METRICS = Path("metrics")
PLOTS = METRICS / "plots"

logger = logging.getLogger("stages.evaluate")


def score_package(package: Path, test: pd.DataFrame, labels, value_matrix: dict) -> tuple[dict, object]:
    """Metrics of the model in ``package`` on ``test``, at its own best decision threshold."""
    model = load_model(package / "model.skops")
    spec = FeatureSpec.from_json(package / "feature_spec.json")
    proba = model.predict_proba(build_features(test, spec))[:, 1]
    threshold, _ = best_threshold(labels, proba, value_matrix)
    metrics = score_metrics(labels, proba, threshold)
    metrics.update(business_value(labels, proba, threshold, value_matrix))
    metrics["threshold"] = threshold
    return metrics, proba


def champion_metrics(params: dict, candidate_run: str, test, labels, value_matrix) -> tuple[dict | None, dict | None]:
    """Score the current champion on the same test set; (None, None) when there is none."""
    name = params["deploy"]["model_name"]
    version = tracking.champion_version(params["mlflow"], name)
    if version is None:
        logger.info("no champion for %s yet: only value and baseline thresholds apply", name)
        return None, None
    info = {"model_version": str(version.version), "mlflow_run_id": version.run_id}
    with tempfile.TemporaryDirectory() as tmp:
        package = tracking.download_package(params["mlflow"], version.run_id, Path(tmp))
        metrics, _ = score_package(package, test, labels, value_matrix)
    logger.info("champion %s v%s scored ROC AUC %.4f on this test set", name, version.version, metrics["roc_auc"])
    return metrics, info


def main() -> int:
    setup_logging()
    params = load_params()
    cfg = params["evaluate"]
    contract = contract_or_exit(params)
    card = read_json(CANDIDATE / "model_card.json")
    test = pd.read_parquet(TEST)
    labels = (test[contract.target] == contract.positive_class).astype(int).to_numpy()

    metrics, proba = score_package(CANDIDATE, test, labels, cfg["value_matrix"])
    threshold = metrics["threshold"]
    try:
        champion, champion_info = champion_metrics(params, card["mlflow"]["run_id"], test, labels, cfg["value_matrix"])
    except Exception as exc:
        logger.error("the champion model could not be scored (%s); fix the registry or remove the "
                     "'champion' alias to gate on value thresholds alone", exc)
        return 1
    baseline = baseline_metrics(labels, card["training_data"]["positive_share"], cfg["value_matrix"])
    decision = decide(metrics, champion, params["gate"], baseline)

    negative = next(v for v in contract.target_spec.allowed or ("0", "1") if v != contract.positive_class)
    plots = {
        "roc": roc_points(labels, proba),
        "precision_recall": pr_points(labels, proba),
        "calibration": calibration_points(labels, proba),
        "confusion": confusion_rows(labels, proba, threshold, labels=(negative, contract.positive_class)),
    }
    slices = slice_metrics(test, labels, proba, threshold, cfg.get("slices", []), cfg.get("min_slice_rows", 30))
    gate = decision.to_dict()
    gate["candidate"] = {"model_version": card["mlflow"]["model_version"], "mlflow_run_id": card["mlflow"]["run_id"]}
    gate["champion"] = None if champion_info is None else {**champion_info, "metrics": champion}
    gate["baseline"] = {"model": "prior-only (predicts the training positive share)", "metrics": baseline}
    for data in (metrics, slices, gate, plots):
        assert_finite(data)
    write_json(METRICS / "evaluation.json", metrics)
    write_json(METRICS / "slices.json", slices)
    write_json(METRICS / "gate.json", gate)
    for name, points in plots.items():
        write_json(PLOTS / f"{name}.json", points)
    tracking.log_evaluation(
        params["mlflow"], card["mlflow"]["run_id"], {k: v for k, v in metrics.items() if isinstance(v, float)},
        [METRICS / "evaluation.json", METRICS / "slices.json", METRICS / "gate.json"],
    )
    logger.info("ROC AUC %.4f, value/row %.2f at threshold %.3f; gate: %s (%s)",
                metrics["roc_auc"], metrics["value_per_row"], threshold,
                "BLESSED" if decision.blessed else "not blessed", "; ".join(decision.reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
