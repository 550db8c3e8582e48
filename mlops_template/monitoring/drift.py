"""Data drift: the recent inference log against the reference sample, column by column.

The columns compared are the contract's model inputs with role ``numeric`` or ``categorical``
(the target and ``ignore`` columns are left out), typed for Evidently by those roles. Evidently's
``DataDriftPreset`` picks a method per column (Wasserstein distance for numeric columns and
Jensen-Shannon distance for categorical ones at these sizes, statistical tests on small samples)
and flags each column; the job alerts when the share of drifted columns exceeds the threshold.

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
from typing import Any

import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.io import write_json
from mlops_template.core.params import MonitoringSection
from mlops_template.monitoring import Window, publish
from mlops_template.monitoring.alerts import Alert, AlertSink

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


def detect_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    contract: Contract,
    threshold: float,
    html_path: Path | None = None,
) -> dict[str, Any]:
    """Compare ``current`` with ``reference`` and summarise; write Evidently's HTML if asked.

    ``drift_detected`` is ``drift_share > threshold``, the share of compared columns that
    Evidently flags as drifted. Columns ``current`` does not carry at all are not compared and
    are listed in ``columns_not_sent``; ValueError when that leaves none.
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
    drifted = [name for name, result in columns.items() if result["drifted"]]
    share = len(drifted) / len(columns)
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
    }


def drift_registry(summary: dict[str, Any]):
    """The job's Prometheus gauges, in a registry of their own."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    suppressed = summary.get("alert_suppressed") is not None
    # left out below min_window_records, so that a Prometheus rule on it never fires on noise
    if not suppressed:
        Gauge("model_drift_share", "Share of input columns with detected drift", registry=registry).set(
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
) -> dict[str, Any]:
    """Check a window of the log for drift: report, summary, gauges, and alert or resolve.

    Writes ``drift.html``, ``drift.json`` and ``drift.prom`` in ``report_dir`` and returns the
    summary. A window of fewer than ``min_window_records`` records neither alerts nor resolves:
    ``drift_detected`` is then false and ``alert_suppressed`` says why. Raises ValueError when
    the window holds no records.
    """
    current = window.read(log_dir)
    if current.empty:
        raise ValueError(f"no inference records in {log_dir} for window {window}")
    reference = pd.read_parquet(reference_path)
    html_path = report_dir / "drift.html"
    result = detect_drift(current, reference, contract, threshold, html_path)
    enough = len(current) >= min_window_records
    summary = {
        "window": window.describe(current),
        **result,
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
            },
            report_path=str(html_path),
        ))
    elif enough:
        alerts.resolve(ALERT_KEY, title)
    return summary
