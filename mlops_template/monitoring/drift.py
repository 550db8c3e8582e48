"""Data drift: the recent inference log against the reference sample, column by column.

The columns compared are the contract's model inputs with role ``numeric`` or ``categorical``
(the target and ``ignore`` columns are left out), typed for Evidently by those roles. Evidently's
``DataDriftPreset`` picks a method per column (Wasserstein distance for numeric columns and
Jensen-Shannon distance for categorical ones at these sizes, statistical tests on small samples)
and flags each column.

Columns are weighed by what the model leans on: each compared column's weight is its permutation
importance (:mod:`mlops_template.monitoring.model`; negative importance counts as 0), normalised
over the compared columns the model reads, and ``drift_share`` is the weight of the drifted ones.
Columns the importance lists as ``unused`` (dropped by featurize, never read) are still compared and
reported (``unused_columns``), but neither counted nor in ``drifted_columns``. Without an importance
file every compared column weighs the same, as the report's ``weighting`` says. The job alerts when
``drift_share`` exceeds the threshold. It also compares the model's own answers with its answers on
the reference (:mod:`mlops_template.monitoring.predictions`) and alerts on that separately.

A drift column that no record of the window carries (absent, or null throughout: clients need
not send columns the model does not use) is not compared but listed in ``columns_not_sent``; a
column null in only part of the window is compared as it is. A window with fewer records than
``min_window_records`` is reported but never alerts (nor resolves an open incident, nor publishes
the drift-share gauge a Prometheus rule reads), since its figures are noise.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.io import write_json
from mlops_template.core.params import MonitoringSection
from mlops_template.monitoring import Window, publish
from mlops_template.monitoring.alerts import Alert, AlertSink
from mlops_template.monitoring.model import Importance
from mlops_template.monitoring.predictions import ALERT_KEY as PREDICTION_ALERT_KEY
from mlops_template.monitoring.predictions import not_compared, prediction_drift

if TYPE_CHECKING:
    from mlops_template.core.tasks import Task

logger = logging.getLogger(__name__)

JOB = "model_drift"
ALERT_KEY = "drift"


def drift_columns(contract: Contract) -> tuple[list[str], list[str]]:
    """Numeric and categorical input columns of the contract, in declaration order."""
    return contract.columns_with_role("numeric"), contract.columns_with_role("categorical")


def columns_not_sent(frame: pd.DataFrame, contract: Contract) -> list[str]:
    """Drift columns that no row of ``frame`` carries: absent, or null in every row."""
    numeric, categorical = drift_columns(contract)
    return [c for c in (*numeric, *categorical) if c not in frame.columns or frame[c].isna().all()]


def prepare(frame: pd.DataFrame, contract: Contract, skip: Collection[str] = ()) -> pd.DataFrame:
    """The drift columns of ``frame`` but ``skip``, numeric ones as float, categorical as strings."""
    numeric, categorical = drift_columns(contract)
    numeric = [c for c in numeric if c not in skip]
    categorical = [c for c in categorical if c not in skip]
    missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if missing:
        raise ValueError(f"columns missing from the data: {missing}")
    prepared = pd.DataFrame(index=frame.index)
    for column in numeric:
        prepared[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in categorical:
        prepared[column] = frame[column].astype("str")
    return prepared


def _column_results(snapshot_dict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column score, method, threshold and verdict from an Evidently snapshot."""
    failed = {t["metric_config"]["metric_id"] for t in snapshot_dict["tests"] if t["status"] == "FAIL"}
    columns = {}
    for metric in snapshot_dict["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            score = float(metric["value"])
            columns[config["column"]] = {
                "score": round(score, 6) if math.isfinite(score) else None,  # e.g. an all-empty column
                "method": config["method"],
                "drifted": metric["id"] in failed,
                "threshold": config["threshold"],
            }
    return columns


def column_weights(compared: list[str], importance: Importance | None) -> dict[str, Any]:
    """Each compared column's weight in ``drift_share`` (summing to 1, unrounded), the unused columns, and why.

    With ``importance``: a column's importance (below 0, or not listed: 0) over the total of the
    compared columns the model reads; ``unused`` ones weigh 0. Without it, or when no compared
    column has a positive importance, every counted column weighs the same.
    """
    unused = [c for c in compared if importance is not None and c in importance.unused]
    counted = [c for c in compared if c not in unused]
    if importance is None:
        raw = dict.fromkeys(counted, 1.0)
        weighting = "equal: no importance file, every compared column counts the same"
    else:
        unknown = [c for c in counted if c not in importance.columns]
        if unknown:
            logger.warning("%s has no importance for %s: they weigh 0", importance.source, unknown)
        raw = {c: max(importance.columns.get(c, 0.0), 0.0) for c in counted}
        weighting = f"importance ({importance.metric or 'metric not named'}) from {importance.source}"
        if not sum(raw.values()):
            raw = dict.fromkeys(counted, 1.0)
            weighting = f"equal: no compared column has a positive importance in {importance.source}"
    total = sum(raw.values())
    weights = {c: raw.get(c, 0.0) / total if total else 0.0 for c in compared}
    return {"weights": weights, "unused": unused, "weighting": weighting}


def detect_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    contract: Contract,
    threshold: float,
    html_path: Path | None = None,
    importance: Importance | None = None,
) -> dict[str, Any]:
    """Compare ``current`` with ``reference`` and summarise; write Evidently's HTML if asked.

    ``drift_detected`` is ``drift_share > threshold``, the weight of the compared columns that
    Evidently flags as drifted (:func:`column_weights`; ``column_share`` is their plain count
    share among the counted columns). Columns ``current`` does not carry at all are not compared
    and are listed in ``columns_not_sent``; ValueError when that leaves none.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if current.empty or reference.empty:
        raise ValueError(f"need rows on both sides: {len(current)} current, {len(reference)} reference")
    not_sent = columns_not_sent(current, contract)
    numeric, categorical = ([c for c in names if c not in not_sent] for names in drift_columns(contract))
    if not numeric and not categorical:
        raise ValueError(f"no drift column is sent in the window ({len(current)} records): {not_sent}")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=[*numeric, *categorical], drift_share=threshold)],
                    include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(prepare(current, contract, not_sent), data_definition=definition),
        Dataset.from_pandas(prepare(reference, contract, not_sent), data_definition=definition),
    )
    columns = _column_results(snapshot.dict())
    weighed = column_weights(list(columns), importance)
    drifted = [n for n, result in columns.items() if result["drifted"] and n not in weighed["unused"]]
    # rounded past float noise, so equal weights judge exactly as a count did (3 of 15 is 0.2, not above it)
    share = round(min(sum(weighed["weights"][n] for n in drifted), 1.0), 9)
    counted = len(columns) - len(weighed["unused"])
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return {
        "rows_current": len(current),
        "rows_reference": len(reference),
        "drift_share": round(share, 6),
        "drifted_columns": drifted,
        "threshold": threshold,
        "drift_detected": share > threshold,
        "columns": columns,
        "columns_not_sent": not_sent,
        "weighting": weighed["weighting"],
        "weights": {name: round(weight, 6) for name, weight in weighed["weights"].items()},
        "unused_columns": weighed["unused"],
        "column_share": round(len(drifted) / counted, 6) if counted else 0.0,
    }


def drift_registry(summary: dict[str, Any]):
    """The job's Prometheus gauges, in a registry of their own."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    suppressed = summary.get("alert_suppressed") is not None
    # left out below min_window_records, so that a Prometheus rule on it never fires on noise
    if not suppressed:
        Gauge("model_drift_share", "Importance-weighted share of input columns with detected drift "
              "(equal weights without an importance file)", registry=registry).set(
            summary["drift_share"]
        )
    Gauge("model_drift_detected", "1 when the drifted share exceeds the threshold (0 on a too-small window)",
          registry=registry).set(int(summary["drift_detected"]))
    Gauge("model_drift_window_records", "Logged records in the window the drift job compared",
          registry=registry).set(summary["rows_current"])
    Gauge("model_drift_min_window_records", "Records a window needs before drift can alert",
          registry=registry).set(summary.get("min_window_records", 0))
    Gauge("model_drift_alert_suppressed", "1 when the window was too small to alert on",
          registry=registry).set(int(suppressed))
    scores = Gauge("model_drift_column_score", "Drift score of each input column (method-specific)",
                   ["column"], registry=registry)
    for column, result in summary["columns"].items():
        if result["score"] is not None:
            scores.labels(column=column).set(result["score"])
    weights = Gauge("model_drift_column_weight", "Weight of each input column in the drift share (its importance)",
                    ["column"], registry=registry)
    for column, weight in summary.get("weights", {}).items():
        weights.labels(column=column).set(weight)
    predictions = summary.get("predictions") or {}
    if predictions.get("compared"):
        if not suppressed:  # as the drift share: never a figure a rule could fire on from noise
            Gauge("model_prediction_drift_psi", "PSI of the logged predictions against the model's on the reference",
                  registry=registry).set(predictions["psi"])
        Gauge("model_prediction_drift_detected", "1 when the predictions' PSI exceeds its threshold",
              registry=registry).set(int(predictions["drift_detected"]))
    Gauge("model_drift_last_run_timestamp_seconds", "When the drift job last completed",
          registry=registry).set(summary["run_timestamp"])
    return registry


def run_drift_job(
    log_dir: Path | str,
    reference_path: Path,
    contract: Contract,
    window: Window,
    threshold: float,
    report_dir: Path,
    alerts: AlertSink,
    pushgateway_url: str | None = None,
    min_window_records: int = MonitoringSection().min_window_records,
    importance: Importance | None = None,
    package: Path | None = None,
    task: Task | None = None,
    prediction_threshold: float = MonitoringSection().prediction_psi_threshold,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Check a window of the log for drift: report, summary, gauges, and alert or resolve.

    Input columns are weighed by ``importance`` (:func:`column_weights`). With the served model's
    ``package`` and its ``task``, the logged predictions are compared with the model's on the
    reference (``predictions`` in the summary, its own alert ``prediction_drift``); with the package's
    ``model_version``, only that version's answers (a canary's challenger answers differently). Writes
    ``drift.html``, ``drift.json`` and ``drift.prom`` in ``report_dir`` and returns the summary. A
    window of fewer than ``min_window_records`` records neither alerts nor resolves: both verdicts
    are then false and ``alert_suppressed`` says why. Raises ValueError when the window holds no
    records.
    """
    current = window.read(log_dir)
    if current.empty:
        raise ValueError(f"no inference records in {log_dir} for window {window}")
    reference = pd.read_parquet(reference_path)
    html_path = report_dir / "drift.html"
    result = detect_drift(current, reference, contract, threshold, html_path, importance)
    enough = len(current) >= min_window_records
    predictions = _predictions(current, reference, package, task, prediction_threshold, model_version)
    predictions["drift_detected"] = predictions["drift_detected"] and enough
    summary = {
        "window": window.describe(current),
        **result,
        "predictions": predictions,
        "min_window_records": min_window_records,
        "enough_records": enough,
        "drift_detected": result["drift_detected"] and enough,
        "alert_suppressed": None if enough else (
            f"window of {len(current)} records is below monitoring.min_window_records ({min_window_records})"
        ),
        "report": str(html_path),
        "run_timestamp": time.time(),
    }
    logger.info("drift share %.3f (threshold %.3f) over %d records; drifted columns: %s; not sent: %s",
                summary["drift_share"], threshold, summary["rows_current"], summary["drifted_columns"],
                summary["columns_not_sent"])
    if not enough:
        logger.warning("%s: no alert decision", summary["alert_suppressed"])
    write_json(report_dir / "drift.json", summary)
    publish(drift_registry(summary), JOB, report_dir / "drift.prom", pushgateway_url)
    title = f"Data drift on model {contract.name!r}"
    if summary["drift_detected"]:
        alerts.fire(Alert(
            key=ALERT_KEY,
            title=title,
            severity="warning",
            figures={
                "drift_share": f"{summary['drift_share']:.2f} > {threshold:.2f}",
                "drifted_columns": ", ".join(summary["drifted_columns"]),
                "rows": f"{summary['rows_current']} current vs {summary['rows_reference']} reference",
                **({"not sent (not compared)": ", ".join(summary["columns_not_sent"])}
                   if summary["columns_not_sent"] else {}),
                **({"unused by the model (not counted)": ", ".join(summary["unused_columns"])}
                   if summary["unused_columns"] else {}),
                "weighting": summary["weighting"],
            },
            report_path=str(html_path),
        ))
    elif enough:
        alerts.resolve(ALERT_KEY, title)
    _alert_predictions(summary, contract, alerts, report_dir / "drift.json")
    return summary


def _predictions(current: pd.DataFrame, reference: pd.DataFrame, package: Path | None, task: Task | None,
                 threshold: float, model_version: str | None = None) -> dict[str, Any]:
    """The prediction-drift summary, or why the predictions were not compared."""
    if package is None or task is None:
        return not_compared("no model package (monitoring.model_package): the model's predictions on the "
                            "reference are unknown", threshold)
    from mlops_template.monitoring.model import reference_output

    if model_version is not None:
        current = current[current["model_version"].astype(str) == model_version]
        if current.empty:
            return not_compared(f"no record of model version {model_version} in the window", threshold)

    try:
        baseline: np.ndarray = reference_output(package, reference, task)
        return {**prediction_drift(task, baseline, current, threshold), "model_version": model_version}
    except Exception as exc:  # noqa: BLE001 - the input drift verdict stands without this one
        logger.warning("predictions not compared: %s", exc)
        return not_compared(f"{type(exc).__name__}: {exc}", threshold)


def _alert_predictions(summary: dict[str, Any], contract: Contract, alerts: AlertSink, report: Path) -> None:
    """Fire the prediction-drift alert, or resolve it on a full window that shows none."""
    found = summary["predictions"]
    title = f"Prediction drift on model {contract.name!r}"
    if found["drift_detected"]:
        alerts.fire(Alert(
            key=PREDICTION_ALERT_KEY,
            title=title,
            severity="warning",
            figures={"psi": f"{found['psi']:.3f} > {found['threshold']:.2f}",
                     "watched": found["watched"],
                     "reference": found["reference"], "current": found["current"]},
            report_path=str(report),
        ))
    elif found["compared"] and summary["enough_records"]:
        alerts.resolve(PREDICTION_ALERT_KEY, title)
