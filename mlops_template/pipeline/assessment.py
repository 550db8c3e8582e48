"""The evaluate stage's work: candidate, baseline and champion scored, compared, and gated.

The candidate and the prior-only baseline are scored on the rolling test set; the champion too,
but only after its registry artifact has been checked against the git-tracked deployment record
(``deployments/champion.json``, which the stage reads and passes in): the registry can be
written by more hands than the repository, and loading a model file builds objects, so a
champion whose alias or bytes differ from what was deployed is refused before it is loaded.
With a golden set, both models also answer its rows: their metrics there, the per-slice losses
and where the answers changed (:mod:`mlops_template.pipeline.comparison`) go to the gate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.artifacts import load_model
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.io import sha256_of
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_FILE
from mlops_template.core.params import AnswerChangeGate, EvaluateSection, GateSection
from mlops_template.pipeline import comparison
from mlops_template.pipeline import evaluation as ev
from mlops_template.pipeline.gate import decide

logger = logging.getLogger(__name__)

Predictor = Callable[[pd.DataFrame], np.ndarray]
TASK = "binary"  # the only task the pipeline trains today


class ChampionUnscorable(RuntimeError):
    """The champion named by the registry cannot be downloaded or scored."""


class ChampionRefused(ChampionUnscorable):
    """The registry's champion is not the model the deployment record says was deployed."""


@dataclass
class Evaluation:
    """Everything the evaluate stage writes: metrics, slices, the gate decision, plots, golden report."""

    metrics: dict
    slices: dict
    gate: dict
    plots: dict[str, list[dict]]
    blessed: bool
    reasons: list[str]
    golden: dict


def load_predictor(package: Path, expected_sha256: str | None = None) -> Predictor:
    """The positive-class probability function of the model in ``package`` (checked, then loaded)."""
    model = load_model(package / MODEL_FILE, expected_sha256)
    spec = FeatureSpec.from_json(package / FEATURE_SPEC_FILE)
    return lambda frame: model.predict_proba(build_features(frame, spec))[:, 1]


def score(labels: np.ndarray, proba: np.ndarray, value_matrix: Mapping[str, float],
          threshold: float | None = None) -> dict:
    """Metrics and business value at ``threshold`` (default: the best one on these rows)."""
    if threshold is None:
        threshold, _ = ev.best_threshold(labels, proba, value_matrix)
    metrics = ev.score_metrics(labels, proba, threshold)
    metrics.update(ev.business_value(labels, proba, threshold, value_matrix))
    metrics["threshold"] = threshold
    return metrics


def score_package(package: Path, test: pd.DataFrame, labels: np.ndarray,
                  value_matrix: Mapping[str, float]) -> tuple[dict, np.ndarray]:
    """Metrics of the model in ``package`` on ``test``, at its own best decision threshold."""
    proba = load_predictor(package)(test)
    return score(labels, proba, value_matrix), proba


def verified_champion(name: str, mlflow_config: Any, record: dict | None,
                      directory: Path) -> tuple[Predictor, dict] | None:
    """The registry's champion of model ``name``, loaded only if it is the one ``record`` says was deployed.

    ``mlflow_config`` is the ``mlflow`` section; ``record`` is the ``champion`` of
    ``deployments/champion.json``. None when the registry names no champion. ChampionRefused
    (nothing loaded) when the alias points at another version or run than the record, or the
    downloaded ``model.skops`` has another sha256 than the record's.
    """
    from mlops_template.pipeline import tracking

    try:
        version = tracking.champion_version(mlflow_config, name)
    except Exception as exc:  # the registry may be down or refuse us
        raise ChampionUnscorable(f"cannot read the registry: {exc}") from exc
    if version is None:
        logger.info("no champion for %s yet: only value and baseline thresholds apply", name)
        return None
    where = f"registry champion {name} v{version.version} (run {version.run_id})"
    if record is None:
        raise ChampionRefused(f"{where}: deployments/champion.json records no champion, so its model cannot be "
                              "verified; refusing to load it (deploy or roll back through the project's commands)")
    if str(record.get("model_version")) != str(version.version) or record.get("mlflow_run_id") != version.run_id:
        raise ChampionRefused(f"{where} is not the deployed champion v{record.get('model_version')} (run "
                              f"{record.get('mlflow_run_id')}) of deployments/champion.json: the alias was moved "
                              "outside the deploy and rollback commands; refusing to load it")
    expected = record.get("sha256")
    if not expected:
        raise ChampionRefused(f"{where}: deployments/champion.json records no sha256 for it; refusing to load it")
    try:
        package = tracking.download_package(mlflow_config, version.run_id, directory)
    except Exception as exc:
        raise ChampionUnscorable(f"{where}: download failed: {exc}") from exc
    actual = sha256_of(package / MODEL_FILE) if (package / MODEL_FILE).exists() else f"(no {MODEL_FILE})"
    if actual != expected:
        raise ChampionRefused(f"{where}: its model.skops has sha256 {actual} but deployments/champion.json records "
                              f"{expected}; refusing to load it")
    try:
        predictor = load_predictor(package, expected)
    except Exception as exc:
        raise ChampionUnscorable(f"{where}: {exc}") from exc
    info = {"model_version": str(version.version), "mlflow_run_id": version.run_id, "sha256": expected,
            "threshold": record.get("threshold")}
    return predictor, info


def _answers(proba: np.ndarray, threshold: float) -> comparison.Answers:
    return comparison.Answers(proba, (proba >= threshold).astype("int64"))


def _changes_report(frame: pd.DataFrame, old: comparison.Answers, new: comparison.Answers,
                    groups: list, cfg: AnswerChangeGate, columns: list[str]) -> dict:
    report = comparison.answer_changes(TASK, frame, old, new, groups, cfg.min_rows, cfg.score_bins)
    masks = {(c, v): m for c, v, m in groups}
    ranked = sorted(report["groups"], key=lambda g: -abs(g["z"]))
    for i, g in enumerate(ranked):  # flagged groups and the three most out of line, with changed rows
        if i < 3 or (abs(g["shift"]) >= cfg.max_shift and abs(g["z"]) >= cfg.min_z):
            g["examples"] = comparison.examples(frame, masks[(g["column"], g["value"])], old, new, columns)
    report["groups"] = ranked
    return report


def compare_on_golden(contract: Contract, cfg: EvaluateSection, gate: GateSection, rows: pd.DataFrame,
                      candidate: Predictor, candidate_threshold: float, champion: Predictor | None,
                      champion_threshold: float | None, log_sample: pd.DataFrame | None = None) -> dict:
    """Both models on the golden rows: metrics, slice losses, answer changes and the gate's checks."""
    started = time.monotonic()
    labels = (rows[contract.target] == contract.positive_class).astype(int).to_numpy()
    new = _answers(candidate(rows), candidate_threshold)
    result: dict[str, Any] = {"challenger": score(labels, new.score, cfg.value_matrix, candidate_threshold),
                              "champion": None, "checks": [], "slices": [], "served_recall": [], "answer_changes": {}}
    if champion is not None:
        old = _answers(champion(rows), champion_threshold)
        result["champion"] = score(labels, old.score, cfg.value_matrix, champion_threshold)
        categorical = [c for c in contract.columns_with_role("categorical") if c in rows.columns]
        explicit = list(cfg.slices)
        slices_cfg, changes_cfg = gate.slices, gate.answer_changes
        min_rows = {c: slices_cfg.min_rows for c in categorical} | {c: cfg.min_slice_rows for c in explicit}
        groups = comparison.categorical_groups(rows, list(dict.fromkeys([*explicit, *categorical])))
        # What serving does (recall at each model's threshold), for the report; the gate uses the configured metric.
        result["served_recall"] = comparison.slice_losses(TASK, "recall", labels, old, new, groups, min_rows)
        if slices_cfg.enabled:
            result["slices"] = comparison.slice_losses(TASK, slices_cfg.metric, labels, old, new, groups, min_rows)
            result["checks"] += comparison.slice_checks(result["slices"], slices_cfg.metric,
                                                        slices_cfg.max_drop, slices_cfg.min_z)
        if changes_cfg.enabled:
            numeric = [c for c in contract.columns_with_role("numeric") if c in rows.columns]
            groups += comparison.numeric_groups(rows, numeric, changes_cfg.numeric_bins)
            inputs = [c.name for c in contract.input_columns]
            report = _changes_report(rows, old, new, groups, changes_cfg, inputs)
            result["answer_changes"]["golden set"] = report
            result["checks"] += comparison.change_checks(report, "golden set", changes_cfg.max_shift,
                                                         changes_cfg.min_z)
            if log_sample is not None and len(log_sample):
                log_groups = comparison.categorical_groups(log_sample, categorical) + \
                    comparison.numeric_groups(log_sample, numeric, changes_cfg.numeric_bins)
                log_old = _answers(champion(log_sample), champion_threshold)
                log_new = _answers(candidate(log_sample), candidate_threshold)
                report = _changes_report(log_sample, log_old, log_new, log_groups, changes_cfg, inputs)
                result["answer_changes"]["inference log"] = report
                result["checks"] += comparison.change_checks(report, "inference log", changes_cfg.max_shift,
                                                             changes_cfg.min_z)
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def inference_log_sample(rows: int, location: str | None, contract: Contract) -> pd.DataFrame | None:
    """The newest ``rows`` (``gate.answer_changes.inference_log_rows``) logged requests' inputs, or None.

    ``location`` is ``monitoring.inference_log_dir``.
    """
    if not rows or not location:
        return None
    from mlops_template.serving.inference_log import read_log

    try:
        frame = read_log(location, last_n=rows)
    except Exception as exc:  # a log that cannot be read must not stop the gate: note it
        logger.warning("inference log %s not read (%s): answer changes on the golden set only", location, exc)
        return None
    inputs = [c.name for c in contract.input_columns]
    if frame.empty or not set(inputs) <= set(frame.columns):
        return None
    return frame[inputs].reset_index(drop=True)


def evaluate_candidate(cfg: EvaluateSection, gate_cfg: GateSection, model_name: str, mlflow_config: Any,
                       inference_log_dir: str | None, contract: Contract, card: dict, test: pd.DataFrame,
                       package: Path, champion_record: dict | None = None,
                       golden: tuple[pd.DataFrame, dict] | None = None) -> Evaluation:
    """Score candidate, baseline and (verified) champion on ``test`` and the golden set; run the gate.

    The sections the evaluate stage declares: ``evaluate`` (``cfg``), ``gate``, ``deploy.model_name``,
    ``mlflow`` and ``monitoring.inference_log_dir`` (where the answer-change check reads live requests).
    """
    labels = (test[contract.target] == contract.positive_class).astype(int).to_numpy()
    candidate = load_predictor(package)
    proba = candidate(test)
    metrics = score(labels, proba, cfg.value_matrix)
    threshold = metrics["threshold"]
    with tempfile.TemporaryDirectory() as tmp:
        loaded = verified_champion(model_name, mlflow_config, champion_record, Path(tmp))
        champion, champion_info = loaded if loaded else (None, None)
        champion_metrics = None
        if champion is not None:
            champion_metrics = score(labels, champion(test), cfg.value_matrix)
            logger.info("champion v%s scored ROC AUC %.4f on this test set", champion_info["model_version"],
                        champion_metrics["roc_auc"])
        golden_result = None
        if golden is not None:
            served = (champion_info or {}).get("threshold")
            log_sample = None if champion is None else inference_log_sample(
                gate_cfg.answer_changes.inference_log_rows, inference_log_dir, contract)
            golden_result = compare_on_golden(
                contract, cfg, gate_cfg, golden[0], candidate, threshold, champion,
                served if served is not None else (champion_metrics or {}).get("threshold"), log_sample)
    baseline = ev.baseline_metrics(labels, card["training_data"]["positive_share"], cfg.value_matrix)
    decision = decide(metrics, champion_metrics, gate_cfg, baseline, golden_result)
    plots = {
        "roc": ev.roc_points(labels, proba),
        "precision_recall": ev.pr_points(labels, proba),
        "calibration": ev.calibration_points(labels, proba),
        "confusion": ev.confusion_rows(labels, proba, threshold,
                                    labels=(contract.negative_class, contract.positive_class)),
    }
    slices = ev.slice_metrics(test, labels, proba, threshold, list(cfg.slices), cfg.min_slice_rows)
    gate = decision.to_dict()
    gate["candidate"] = {"model_version": card["mlflow"]["model_version"], "mlflow_run_id": card["mlflow"]["run_id"]}
    gate["champion"] = None if champion_info is None else {**champion_info, "metrics": champion_metrics}
    gate["baseline"] = {"model": "prior-only (predicts the training positive share)", "metrics": baseline}
    gate["golden"] = _golden_summary(golden, golden_result)
    report = {"golden_set": gate["golden"], "metric": gate_cfg.slices.metric,
              **{k: (golden_result or {}).get(k, default) for k, default in
                 (("slices", []), ("served_recall", []), ("answer_changes", {}))}}
    for data in (metrics, slices, gate, plots, report):
        ev.assert_finite(data)
    return Evaluation(metrics, slices, gate, plots, decision.blessed, decision.reasons, report)


def _golden_summary(golden: tuple[pd.DataFrame, dict] | None, result: dict | None) -> dict | None:
    """What gate.json says about the golden set: which rows, both models' metrics, scoring time."""
    if golden is None:
        return None
    manifest = golden[1]
    return {"rows": manifest["rows"], "sha256": manifest["sha256"], "frozen_at": manifest["frozen_at"],
            "challenger": result["challenger"], "champion": result["champion"], "seconds": result["seconds"]}
