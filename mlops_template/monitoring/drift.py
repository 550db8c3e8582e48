"""Data drift: the recent inference log against the reference sample, column by column.

The columns compared are the contract's model inputs with role ``numeric`` or ``categorical``
(the target and ``ignore`` columns are left out), typed for Evidently by those roles. Evidently's
``DataDriftPreset`` picks a method per column (Wasserstein distance for numeric columns and
Jensen-Shannon distance for categorical ones at these sizes, statistical tests on small samples)
and flags each column; the job alerts when the share of drifted columns exceeds the threshold.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.config import write_json
from mlops_template.contract import Contract
from mlops_template.monitoring import Window, publish
from mlops_template.monitoring.alerts import Alert, AlertSink

logger = logging.getLogger(__name__)

JOB = "model_drift"
ALERT_KEY = "drift"


def drift_columns(contract: Contract) -> tuple[list[str], list[str]]:
    """Numeric and categorical input columns of the contract, in declaration order."""
    return contract.columns_with_role("numeric"), contract.columns_with_role("categorical")


def prepare(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The drift columns of ``frame``, numeric ones as float and categorical ones as strings."""
    numeric, categorical = drift_columns(contract)
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
    Evidently flags as drifted.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if current.empty or reference.empty:
        raise ValueError(f"need rows on both sides: {len(current)} current, {len(reference)} reference")
    numeric, categorical = drift_columns(contract)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=[*numeric, *categorical], drift_share=threshold)],
                    include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(prepare(current, contract), data_definition=definition),
        Dataset.from_pandas(prepare(reference, contract), data_definition=definition),
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
    }


def drift_registry(summary: dict[str, Any]):
    """The job's Prometheus gauges, in a registry of their own."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("model_drift_share", "Share of input columns with detected drift", registry=registry).set(
        summary["drift_share"]
    )
    Gauge("model_drift_detected", "1 when the drifted share exceeds the threshold",
          registry=registry).set(int(summary["drift_detected"]))
    scores = Gauge("model_drift_column_score", "Drift score of each input column (method-specific)",
                   ["column"], registry=registry)
    for column, result in summary["columns"].items():
        if result["score"] is not None:
            scores.labels(column=column).set(result["score"])
    Gauge("model_drift_last_run_timestamp_seconds", "When the drift job last completed",
          registry=registry).set(summary["run_timestamp"])
    return registry


def run_drift_job(
    log_dir: Path,
    reference_path: Path,
    contract: Contract,
    window: Window,
    threshold: float,
    report_dir: Path,
    alerts: AlertSink,
    pushgateway_url: str | None = None,
) -> dict[str, Any]:
    """Check a window of the log for drift: report, summary, gauges, and alert or resolve.

    Writes ``drift.html``, ``drift.json`` and ``drift.prom`` in ``report_dir`` and returns the
    summary. Raises ValueError when the window holds no records.
    """
    current = window.read(log_dir)
    if current.empty:
        raise ValueError(f"no inference records in {log_dir} for window {window}")
    reference = pd.read_parquet(reference_path)
    html_path = report_dir / "drift.html"
    summary = {
        "window": window.describe(current),
        **detect_drift(current, reference, contract, threshold, html_path),
        "report": str(html_path),
        "run_timestamp": time.time(),
    }
    logger.info("drift share %.3f (threshold %.3f) over %d records; drifted columns: %s",
                summary["drift_share"], threshold, summary["rows_current"], summary["drifted_columns"])
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
            },
            report_path=str(html_path),
        ))
    else:
        alerts.resolve(ALERT_KEY, title)
    return summary
