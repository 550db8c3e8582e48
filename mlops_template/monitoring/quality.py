"""Live quality: ground truth that arrives later, joined with the inference log.

Ground truth comes as a CSV or JSON-lines file with ``request_id``, ``record_index`` and
``label`` (the contract's class string, e.g. ``>50K``, not ``1``). ``record_index`` may be left
out only when every labelled request was logged with one record; otherwise the file is refused,
since each label would join to the first record of its request. ``request_id`` is the ``X-Request-ID`` the
service answered with: its own id, unique per request (a client's own ``X-Request-ID`` is only
echoed back as ``X-Client-Request-ID`` and logged as ``client_request_id``, and is not a key).
A key the log holds more than once (a log copied twice, or entries written before the service
made its own ids, when two clients could send the same one) is counted in
``duplicate_log_entries``; when its entries disagree on the prediction the key is ambiguous,
left out of the join and counted in ``ambiguous_log_records``, since no label can be matched
to one of them. Joined with the log on
``(request_id, record_index)`` it gives the task's live metrics
(:attr:`~mlops_template.core.tasks.Task.live_metrics`), compared with the offline evaluation
(``metrics/evaluation.json``): a relative drop of any of them beyond ``quality_drop_fraction``
(for an error such as RMSE, a rise) raises an alert. Binary: ROC AUC from the logged
probabilities, and accuracy and business value per row from the logged decisions (the label the
service returned, so the threshold in force at the time counts, not today's). Multiclass: accuracy
and macro-F1 (log loss too, reported) from the logged class probabilities, the label being a class
name. Regression: RMSE and MAE (R², reported) of the logged predictions, the label being a number.
Windows with fewer than ``min_labelled``
labelled records are reported but never alert (nor publish a drop gauge), since their figures
are noise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.io import read_json, write_json
from mlops_template.core.tasks import Task, task_of
from mlops_template.monitoring import Window, publish
from mlops_template.monitoring.alerts import Alert, AlertSink
from mlops_template.pipeline.evaluation import business_value, score_metrics

logger = logging.getLogger(__name__)

JOB = "model_quality"
ALERT_KEY = "quality"
COMPARED = ("roc_auc", "value_per_row")  # binary's live metrics, compared when no task says otherwise
KEYS = ["request_id", "record_index"]


def read_ground_truth(path: Path) -> pd.DataFrame:
    """Labels from a ``.csv`` or ``.jsonl`` file, one row per ``(request_id, record_index)``.

    A key given twice keeps its last label (a correction wins over the first report). Without a
    ``record_index`` column every label is read as record 0 (see :func:`check_single_records`).
    """
    return read_labels(path)[0]


def read_labels(path: Path) -> tuple[pd.DataFrame, bool]:
    """:func:`read_ground_truth`'s frame, and whether the file gave ``record_index`` itself."""
    path = Path(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={"request_id": "str", "label": "str"})
    elif path.suffix in (".jsonl", ".ndjson"):
        frame = pd.read_json(path, lines=True, dtype={"request_id": "str", "label": "str"})
    else:
        raise ValueError(f"ground truth must be .csv or .jsonl, got {path.name}")
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"ground truth {path} lacks column(s) {missing}")
    if "record_index" not in frame.columns:
        frame["record_index"] = None
    given = bool(frame["record_index"].notna().all())  # a row without it (JSON lines) is read as 0
    frame["request_id"] = frame["request_id"].astype("str")
    indexes = pd.to_numeric(frame["record_index"].fillna(0), errors="coerce")
    if indexes.isna().any() or (indexes < 0).any() or (indexes % 1 != 0).any():
        bad = frame.loc[indexes.isna() | (indexes < 0) | (indexes % 1 != 0), "record_index"].head(3).tolist()
        raise ValueError(f"ground truth {path.name}: record_index must be a whole number >= 0 on every row, "
                         f"got {bad}")
    frame["record_index"] = indexes.astype("int64")
    frame["label"] = frame["label"].astype("str")
    return frame.loc[:, [*KEYS, "label"]].drop_duplicates(KEYS, keep="last"), given


def check_single_records(log: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Refuse labels without ``record_index`` when a labelled request was logged with several records.

    Read as record 0, such labels would all join to each request's first record and score the
    wrong predictions: a false quality alert, or a missed one.
    """
    sizes = log.groupby("request_id").size()
    several = sizes[sizes.index.isin(truth["request_id"]) & (sizes > 1)]
    if not several.empty:
        example = several.index[0]
        raise ValueError(f"the labels file has no record_index column, but {len(several)} labelled request(s) "
                         f"hold several records (request {example} holds {several.iloc[0]}): add record_index, "
                         f"the position of the record in its request (0 for the first)")


def live_quality(
    log: pd.DataFrame, truth: pd.DataFrame, contract: Contract, value_matrix: Mapping[str, float]
) -> dict[str, Any]:
    """The task's live metrics of the logged predictions that have ground truth (see the module doc)."""
    task = task_of(contract)
    allowed = contract.target_spec.allowed
    if allowed is not None:
        unknown = sorted(set(truth["label"]) - set(allowed))
        if unknown:
            raise ValueError(f"ground truth labels {unknown[:5]} are not among the contract's classes "
                             f"{list(allowed)}: write each label as one of those")
    unique, duplicates, ambiguous = unique_log_keys(log)
    joined = unique.merge(truth.rename(columns={"label": "actual"}), on=KEYS, how="inner")
    result: dict[str, Any] = {"labelled_records": len(joined), "duplicate_log_entries": duplicates,
                              "ambiguous_log_records": ambiguous}
    if not contract.is_binary:
        return {**result, **_task_figures(task, joined)}
    if joined.empty:
        return {**result, "roc_auc": None, "accuracy": None, "value_per_row": None}
    y = (joined["actual"] == contract.positive_class).to_numpy(dtype="int64")
    decision = (joined["label"] == contract.positive_class).to_numpy(dtype="float64")
    proba = joined["probability"].to_numpy(dtype="float64")
    # The logged decision is the prediction: as a 0/1 score it is positive at any threshold in (0, 1].
    value = business_value(y, decision, 0.5, value_matrix)
    return {
        **result,
        "roc_auc": score_metrics(y, proba, 0.5)["roc_auc"],
        "accuracy": round(float(np.mean(decision == y)), 6),
        "value_per_row": value["value_per_row"],
        "positive_rate": round(float(y.mean()), 6),
        **{k: value[k] for k in ("tp", "fp", "tn", "fn")},
    }


def _task_figures(task: Task, joined: pd.DataFrame) -> dict[str, Any]:
    """Live and headline metrics of a task without a decision threshold (None for an empty join)."""
    names = list(dict.fromkeys([*task.live_metrics, *task.headline_metrics]))
    if joined.empty:
        return dict.fromkeys(names)
    figures = task.metrics(task.encode(joined["actual"]), task.output_of_answers(joined))
    return {name: figures.get(name) for name in names}


def unique_log_keys(log: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """The log with one entry per ``(request_id, record_index)``, and what that took.

    Returns the frame, the number of entries beyond the first for a key (``duplicate_log_entries``)
    and the number of entries left out because their key's entries disagree on model version,
    probability or label (``ambiguous_log_records``). Entries that agree are one prediction logged
    twice: one is kept. Both counts are logged when not zero.
    """
    repeated = log.duplicated(KEYS, keep=False)
    if not repeated.any():
        return log, 0, 0
    duplicates = int(log.duplicated(KEYS, keep="first").sum())
    prediction = [c for c in ("model_version", "probability", "label", "prediction") if c in log.columns]
    variants = log.loc[repeated, [*KEYS, *prediction]].drop_duplicates().groupby(KEYS).size()
    conflicting = variants[variants > 1].index
    is_ambiguous = pd.MultiIndex.from_frame(log[KEYS]).isin(conflicting)
    ambiguous = int(is_ambiguous.sum())
    logger.warning("inference log: %d entries repeat a (request_id, record_index) key; %d entries, whose "
                   "key's entries disagree, are left out of the join", duplicates, ambiguous)
    return log[~is_ambiguous].drop_duplicates(KEYS, keep="last"), duplicates, ambiguous


def compare(live: Mapping[str, Any], baseline: Mapping[str, Any], drop_fraction: float,
            directions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Relative drop of each compared figure from the baseline, and whether any is too large.

    ``directions`` maps each compared figure to ``higher_is_better`` or ``lower_is_better`` (the
    task's :attr:`~mlops_template.core.tasks.Task.live_metrics`; default binary's :data:`COMPARED`).
    A drop is ``(baseline - live) / |baseline|`` for a figure where higher is better, and
    ``(live - baseline) / |baseline|`` for an error (RMSE 10% higher is a 10% drop); negative means
    the live figure is better. Figures missing on either side (ROC AUC of a single-class window),
    or with a zero baseline, are not compared.
    """
    directions = directions or dict.fromkeys(COMPARED, "higher_is_better")
    drops = {}
    for name, direction in directions.items():
        if live.get(name) is not None and baseline.get(name):
            drop = (baseline[name] - live[name]) / abs(baseline[name])
            drops[name] = round(drop if direction == "higher_is_better" else -drop, 6)
    worst = max(drops.values(), default=0.0)
    return {"drops": drops, "drop_fraction": worst, "quality_drop": worst > drop_fraction}


def quality_registry(summary: Mapping[str, Any]):
    """The job's Prometheus gauges, in a registry of their own (absent figures are left out)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauges = {
        "model_live_roc_auc": ("ROC AUC of labelled live predictions", summary["live"].get("roc_auc")),
        "model_live_accuracy": ("Accuracy of labelled live decisions", summary["live"].get("accuracy")),
        "model_live_value_per_row": ("Business value per labelled live record",
                                     summary["live"].get("value_per_row")),
        "model_live_macro_f1": ("Macro-F1 of labelled live answers (multiclass)", summary["live"].get("macro_f1")),
        "model_live_rmse": ("RMSE of labelled live predictions (regression)", summary["live"].get("rmse")),
        "model_live_mae": ("MAE of labelled live predictions (regression)", summary["live"].get("mae")),
        "model_live_labelled_records": ("Live records with ground truth in the window",
                                        summary["live"]["labelled_records"]),
        "model_live_duplicate_log_entries": ("Inference-log entries repeating a (request_id, record_index) key",
                                             summary["live"].get("duplicate_log_entries")),
        "model_live_ambiguous_log_records": ("Inference-log entries left out of the join: their key's entries "
                                             "disagree", summary["live"].get("ambiguous_log_records")),
        # left out below min_labelled, so that a Prometheus rule on it never fires on noise
        "model_quality_drop_fraction": ("Largest relative drop from the offline evaluation",
                                        summary["drop_fraction"] if summary["enough_labels"] else None),
        "model_quality_last_run_timestamp_seconds": ("When the quality job last completed",
                                                     summary["run_timestamp"]),
    }
    for name, (help_text, value) in gauges.items():
        if value is not None:
            Gauge(name, help_text, registry=registry).set(value)
    return registry


def run_quality_job(
    log_dir: Path | str,
    truth_path: Path,
    contract: Contract,
    window: Window,
    baseline_path: Path,
    value_matrix: Mapping[str, float],
    drop_fraction: float,
    min_labelled: int,
    report_dir: Path,
    alerts: AlertSink,
    pushgateway_url: str | None = None,
) -> dict[str, Any]:
    """Score a window of the log against ground truth: summary, gauges, and alert or resolve.

    Writes ``quality.json`` and ``quality.prom`` in ``report_dir`` and returns the summary.
    Raises ValueError when no logged record has ground truth.
    """
    truth, record_index_given = read_labels(truth_path)
    log = window.read(log_dir)
    if not record_index_given:
        check_single_records(log, truth)
    live = live_quality(log, truth, contract, value_matrix)
    if live["labelled_records"] == 0:
        raise ValueError(f"none of the {len(truth)} labels in {truth_path} match a logged record "
                         f"in {log_dir} for window {window}")
    baseline = read_json(baseline_path)
    directions = task_of(contract).live_metrics
    comparison = compare(live, baseline, drop_fraction, directions)
    enough = live["labelled_records"] >= min_labelled
    summary_path = report_dir / "quality.json"
    summary = {
        "window": window.describe(log),
        "ground_truth": str(truth_path),
        "live": live,
        "baseline": {name: baseline.get(name) for name in directions},
        **comparison,
        "threshold": drop_fraction,
        "min_labelled": min_labelled,
        "enough_labels": enough,
        "quality_drop": comparison["quality_drop"] and enough,
        "alert_suppressed": None if enough else (
            f"{live['labelled_records']} labelled records is below "
            f"monitoring.quality_min_labelled ({min_labelled})"
        ),
        "run_timestamp": time.time(),
    }
    if not enough:
        logger.warning("%s: no alert decision", summary["alert_suppressed"])
    write_json(summary_path, summary)
    publish(quality_registry(summary), JOB, report_dir / "quality.prom", pushgateway_url)
    title = f"Live quality drop on model {contract.name!r}"
    if summary["quality_drop"]:
        alerts.fire(Alert(
            key=ALERT_KEY,
            title=title,
            severity="critical",
            figures={
                **{f"{name} live vs offline": f"{live[name]} vs {baseline.get(name)}"
                   for name in comparison["drops"]},
                "largest drop": f"{comparison['drop_fraction']:.1%} > {drop_fraction:.0%}",
                "labelled records": live["labelled_records"],
            },
            report_path=str(summary_path),
        ))
    elif enough:
        alerts.resolve(ALERT_KEY, title)
    return summary
