"""The evaluate stage's work: candidate, baseline and champion scored, compared, and gated.

The candidate and the prior-only baseline are scored on the rolling test set; the champion too,
but only after its registry artifact has been checked against the git-tracked deployment record
(``deployments/champion.json``, which the stage reads and passes in): the registry can be
written by more hands than the repository, and loading a model file builds objects, so a
champion whose alias or bytes differ from what was deployed is refused before it is loaded.
With a golden set, both models also answer its rows: their metrics there, the per-slice losses
and where the answers changed (:mod:`mlops_template.pipeline.comparison`) go to the gate.

Every task goes through the same steps; what differs (metrics and value, baseline, slices, plots,
what a model "answers") is asked of the task's :class:`mlops_template.pipeline.scoring.Scoring`.
The candidate's permutation importance (:mod:`mlops_template.pipeline.importance`) is computed here too.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlops_template.core.artifacts import load_model
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.io import sha256_of
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_FILE
from mlops_template.core.params import AnswerChangeGate, EvaluateSection, GateSection
from mlops_template.core.tasks import Task, task_of
from mlops_template.pipeline import comparison, importance
from mlops_template.pipeline import evaluation as ev
from mlops_template.pipeline.gate import GateConfigError, check_metric_names, decide
from mlops_template.pipeline.scoring import binary_score, scoring_for, target_summary

logger = logging.getLogger(__name__)

Predictor = Callable[[pd.DataFrame], np.ndarray]


class TestRows(Protocol):
    """A test set too big for one process (the Dask engine's, in
    :mod:`mlops_template.pipeline.distributed_evaluation`), as :func:`judge` reads it.

    ``frame`` holds at least the target and the ``evaluate.slices`` columns of every row, in order;
    ``columns`` names every column of the set; ``predict`` runs a predictor on every row;
    ``take`` returns the rows at the given positions (the permutation importance's sample).
    """

    frame: pd.DataFrame
    columns: list[str]

    def __len__(self) -> int: ...

    def predict(self, predictor: Predictor, /) -> np.ndarray: ...

    def take(self, positions: Any, /) -> pd.DataFrame: ...


class InMemoryTestRows:
    """A test set held by this process: a DataFrame seen as :class:`TestRows`."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.columns = list(frame.columns)

    def __len__(self) -> int:
        return len(self.frame)

    def predict(self, predictor: Predictor, /) -> np.ndarray:
        """``predictor`` on every row."""
        return predictor(self.frame)

    def take(self, positions: Any, /) -> pd.DataFrame:
        """The rows at ``positions``."""
        return self.frame.take(positions)


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
    importance: dict | None = None


def load_predictor(package: Path, task: Task | None = None, expected_sha256: str | None = None) -> Predictor:
    """The output function (raw rows -> :meth:`Task.predict`) of the model in ``package``, checked, then loaded.

    ``task`` defaults to binary's positive-class probability, for callers from before tasks.
    """
    model = load_model(package / MODEL_FILE, expected_sha256)
    spec = FeatureSpec.from_json(package / FEATURE_SPEC_FILE)
    if task is None:
        return lambda frame: model.predict_proba(build_features(frame, spec))[:, 1]
    return lambda frame: task.predict(model, build_features(frame, spec))


def score(labels: np.ndarray, proba: np.ndarray, value_matrix: Mapping[str, float],
          threshold: float | None = None) -> dict:
    """Binary metrics and business value at ``threshold`` (default: the best one on these rows)."""
    return binary_score(labels, proba, value_matrix, threshold)


def verified_champion(name: str, mlflow_config: Any, record: dict | None,
                      directory: Path, task: Task | None = None) -> tuple[Predictor, dict] | None:
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
        predictor = load_predictor(package, task, expected)
    except Exception as exc:
        raise ChampionUnscorable(f"{where}: {exc}") from exc
    info = {"model_version": str(version.version), "mlflow_run_id": version.run_id, "sha256": expected,
            "threshold": record.get("threshold")}
    return predictor, info


def _changes_report(task: str, frame: pd.DataFrame, old: comparison.Answers, new: comparison.Answers,
                    groups: list, cfg: AnswerChangeGate, columns: list[str]) -> dict:
    report = comparison.answer_changes(task, frame, old, new, groups, cfg.min_rows, cfg.score_bins)
    masks = {(c, v): m for c, v, m in groups}
    ranked = sorted(report["groups"], key=lambda g: -abs(g["z"]))
    for i, g in enumerate(ranked):  # flagged groups and the three most out of line, with changed rows
        if i < 3 or (abs(g["shift"]) >= cfg.max_shift and abs(g["z"]) >= cfg.min_z):
            g["examples"] = comparison.examples(frame, masks[(g["column"], g["value"])], old, new, columns,
                                                task=task)
    report["groups"] = ranked
    return report


def compare_on_golden(contract: Contract, cfg: EvaluateSection, gate: GateSection, rows: pd.DataFrame,
                      candidate: Predictor, candidate_threshold: float | None, champion: Predictor | None,
                      champion_threshold: float | None, log_sample: pd.DataFrame | None = None,
                      summary: Mapping[str, Any] | None = None) -> dict:
    """Both models on the golden rows: metrics, slice losses, answer changes and the gate's checks.

    ``summary`` is the candidate's training target summary (regression reads its spread: the unit of
    the checks); thresholds are binary's (None for the other tasks).
    """
    started = time.monotonic()
    task = task_of(contract)
    scoring = scoring_for(task, cfg, summary)
    labels = task.encode(rows[contract.target])
    candidate_output = candidate(rows)
    new = scoring.answers(candidate_output, candidate_threshold)
    result: dict[str, Any] = {"challenger": scoring.score(labels, candidate_output, candidate_threshold),
                              "champion": None, "checks": [], "slices": [], "served_recall": [], "served": None,
                              "answer_changes": {}}
    if champion is not None:
        champion_output = champion(rows)
        old = scoring.answers(champion_output, champion_threshold)
        result["champion"] = scoring.score(labels, champion_output, champion_threshold)
        categorical = [c for c in contract.columns_with_role("categorical") if c in rows.columns]
        explicit = list(cfg.slices)
        slices_cfg, changes_cfg = gate.slices, gate.answer_changes
        min_rows = {c: slices_cfg.min_rows for c in categorical} | {c: cfg.min_slice_rows for c in explicit}
        groups = comparison.categorical_groups(rows, list(dict.fromkeys([*explicit, *categorical])))
        # What serving does (binary: recall at each model's threshold), for the report; the gate uses the
        # configured metric.
        served = comparison.SERVED_SLICE_METRIC[task.name]
        result["served"] = {"metric": served,
                            "slices": comparison.slice_losses(task.name, served, labels, old, new, groups, min_rows)}
        if served == "recall":
            result["served_recall"] = result["served"]["slices"]
        if slices_cfg.enabled:
            result["slices"] = comparison.slice_losses(task.name, slices_cfg.metric, labels, old, new, groups,
                                                       min_rows)
            result["checks"] += comparison.slice_checks(result["slices"], slices_cfg.metric,
                                                        slices_cfg.max_drop, slices_cfg.min_z)
        if changes_cfg.enabled:
            numeric = [c for c in contract.columns_with_role("numeric") if c in rows.columns]
            groups += comparison.numeric_groups(rows, numeric, changes_cfg.numeric_bins)
            inputs = [c.name for c in contract.input_columns]
            report = _changes_report(task.name, rows, old, new, groups, changes_cfg, inputs)
            result["answer_changes"]["golden set"] = report
            result["checks"] += comparison.change_checks(report, "golden set", changes_cfg.max_shift,
                                                         changes_cfg.min_z)
            if log_sample is not None and len(log_sample):
                log_groups = comparison.categorical_groups(log_sample, categorical) + \
                    comparison.numeric_groups(log_sample, numeric, changes_cfg.numeric_bins)
                log_old = scoring.answers(champion(log_sample), champion_threshold)
                log_new = scoring.answers(candidate(log_sample), candidate_threshold)
                report = _changes_report(task.name, log_sample, log_old, log_new, log_groups, changes_cfg, inputs)
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


def check_gate_fits(gate_cfg: GateSection, metrics: Mapping[str, Any], task: Task) -> None:
    """GateConfigError when a threshold or ``gate.slices.metric`` names something ``task`` does not produce."""
    problems = []
    try:
        check_metric_names(gate_cfg, metrics, task.name)
    except GateConfigError as exc:
        problems.append(str(exc))
    if gate_cfg.slices.enabled:
        try:
            comparison.slice_metric(task.name, gate_cfg.slices.metric)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise GateConfigError("; ".join(problems))


def evaluate_candidate(cfg: EvaluateSection, gate_cfg: GateSection, model_name: str, mlflow_config: Any,
                       inference_log_dir: str | None, contract: Contract, card: dict,
                       test: pd.DataFrame | TestRows, package: Path, champion_record: dict | None = None,
                       golden: tuple[pd.DataFrame, dict] | None = None) -> Evaluation:
    """Score candidate, baseline and (verified) champion on ``test`` and the golden set; run the gate.

    The sections the evaluate stage declares: ``evaluate`` (``cfg``), ``gate``, ``deploy.model_name``,
    ``mlflow`` and ``monitoring.inference_log_dir`` (where the answer-change check reads live requests).
    The candidate is the model in ``package``; the champion is the registry's, verified (see :func:`judge`).
    """
    task = task_of(contract)
    candidate = load_predictor(package, task)
    used = FeatureSpec.from_json(package / FEATURE_SPEC_FILE).source_columns
    with tempfile.TemporaryDirectory() as tmp:
        return judge(cfg, gate_cfg, contract, card, test, candidate, used,
                     lambda: verified_champion(model_name, mlflow_config, champion_record, Path(tmp), task),
                     inference_log_dir, golden)


def judge(cfg: EvaluateSection, gate_cfg: GateSection, contract: Contract, card: dict,
          test: pd.DataFrame | TestRows, candidate: Predictor, used_columns: list[str],
          load_champion: Callable[[], tuple[Predictor, dict] | None] = lambda: None,
          inference_log_dir: str | None = None, golden: tuple[pd.DataFrame, dict] | None = None) -> Evaluation:
    """The evaluate stage's work on a loaded candidate (raw rows -> :meth:`Task.predict` output).

    ``card`` is the candidate's model card (its ``training_data.target`` gives the baseline);
    ``used_columns`` the contract columns its features read (the others are ``unused`` in the
    importance); ``load_champion`` is called once the gate is known to fit the task, and returns
    the champion's predictor and record, or None. GateConfigError (before the champion is loaded)
    when the gate names metrics the task lacks; ModelCardError when the card does not describe the target.
    ``test`` is a DataFrame, or a :class:`TestRows` whose predictions are computed elsewhere.
    """
    rows = InMemoryTestRows(test) if isinstance(test, pd.DataFrame) else test
    task = task_of(contract)
    summary = target_summary(card, task)
    scoring = scoring_for(task, cfg, summary)
    labels = task.encode(rows.frame[contract.target])
    output = rows.predict(candidate)
    metrics = {"task": task.name, **scoring.score(labels, output)}
    threshold = metrics["threshold"]
    baseline = scoring.baseline(labels)
    check_gate_fits(gate_cfg, metrics, task)
    loaded = load_champion()
    champion, champion_info = loaded if loaded else (None, None)
    champion_metrics = None
    if champion is not None:
        try:  # a champion of another task (the contract changed) or a broken one cannot answer these rows
            champion_metrics = scoring.score(labels, rows.predict(champion))
        except Exception as exc:
            raise ChampionUnscorable(f"champion v{champion_info['model_version']} cannot be scored as a "
                                     f"{task.name} model on this test set: {exc}") from exc
        logger.info("champion v%s scored %s on this test set", champion_info["model_version"],
                    scoring.headline(champion_metrics))
    golden_result = None
    if golden is not None:
        served = (champion_info or {}).get("threshold")
        log_sample = None if champion is None else inference_log_sample(
            gate_cfg.answer_changes.inference_log_rows, inference_log_dir, contract)
        golden_result = compare_on_golden(
            contract, cfg, gate_cfg, golden[0], candidate, threshold, champion,
            served if served is not None else (champion_metrics or {}).get("threshold"), log_sample, summary)
    decision = decide(metrics, champion_metrics, gate_cfg, baseline, golden_result)
    plots = scoring.plots(labels, output, threshold)
    slices = scoring.slices(rows.frame, labels, output, threshold, list(cfg.slices), cfg.min_slice_rows)
    gate = decision.to_dict()
    gate["candidate"] = {"model_version": card["mlflow"]["model_version"], "mlflow_run_id": card["mlflow"]["run_id"]}
    gate["champion"] = None if champion_info is None else {**champion_info, "metrics": champion_metrics}
    gate["baseline"] = {"model": scoring.baseline_model, "metrics": baseline}
    gate["golden"] = _golden_summary(golden, golden_result)
    report = {"golden_set": gate["golden"], "metric": gate_cfg.slices.metric,
              **{k: (golden_result or {}).get(k, default) for k, default in
                 (("slices", []), ("served", None), ("served_recall", []), ("answer_changes", {}))}}
    columns = [c.name for c in contract.input_columns if c.name in rows.columns]
    weights = importance.permutation_importance(candidate, rows, labels, task, columns, used_columns)
    for data in (metrics, slices, gate, plots, report, weights):
        ev.assert_finite(data)
    return Evaluation(metrics, slices, gate, plots, decision.blessed, decision.reasons, report, weights)


def _golden_summary(golden: tuple[pd.DataFrame, dict] | None, result: dict | None) -> dict | None:
    """What gate.json says about the golden set: which rows, both models' metrics, scoring time."""
    if golden is None:
        return None
    manifest = golden[1]
    return {"rows": manifest["rows"], "sha256": manifest["sha256"], "frozen_at": manifest["frozen_at"],
            "challenger": result["challenger"], "champion": result["champion"], "seconds": result["seconds"]}
