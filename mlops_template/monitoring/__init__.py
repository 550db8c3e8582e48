"""Monitoring of the served model: data drift and live quality, with alerts and metrics.

Two jobs, meant for cron (``mlops-template drift|quality``):

- :mod:`.drift` compares a window of the inference log with the reference sample that featurize
  keeps, column by column with Evidently, each column weighed by the model's importance
  (:mod:`.model`), and the logged predictions with the model's on the reference (:mod:`.predictions`);
- :mod:`.quality` joins ground truth that arrived later with the log and compares the task's live
  metrics (binary: ROC AUC and business value; multiclass: accuracy and macro-F1; regression:
  RMSE and MAE) with the offline evaluation.

Both write an HTML or JSON report, a Prometheus textfile (for node-exporter's textfile collector)
and optionally push the same gauges to a Pushgateway; both alert through :mod:`.alerts`. This
module holds what the two share: settings from ``params.yaml``, the log window, and publishing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_template.core import objectstore, paths
from mlops_template.core.params import MonitoringSection, Params
from mlops_template.serving.inference_log import read_log

logger = logging.getLogger(__name__)

REFERENCE_PATH = paths.REFERENCE  # written by the featurize stage
EVALUATION_PATH = paths.EVALUATION  # written by the evaluate stage


@dataclass(frozen=True)
class Settings:
    """The ``monitoring`` section of params.yaml, with environment overrides applied.

    Its defaults are the section's (:class:`mlops_template.core.params.MonitoringSection`).
    """

    inference_log_dir: Path | str  # or the team's s3:// prefix
    window_records: int
    min_window_records: int
    drift_share_threshold: float
    prediction_psi_threshold: float
    model_package: str  # "champion", a package folder, or "" (no prediction drift)
    importance: Path | None  # importance file used when the package has none
    quality_drop_fraction: float
    quality_min_labelled: int
    report_dir: Path
    alert_dedup_hours: float
    pushgateway_url: str | None
    webhook_url: str | None
    # Set when Alertmanager notifies: the pushed gauges reach it through Prometheus' rules and it
    # alone groups, deduplicates and sends, so the jobs' own webhook (for cron-only setups) is off.
    alertmanager_url: str | None

    @classmethod
    def from_section(cls, section: MonitoringSection, env: Mapping[str, str] = os.environ) -> Settings:
        """Settings from the typed section; ``INFERENCE_LOG_URL``, ``PUSHGATEWAY_URL``, ``ALERT_WEBHOOK_URL``,
        ``ALERTMANAGER_URL`` win (the first is where the replicas ship their logs, in team mode)."""
        return cls(
            inference_log_dir=log_location(env.get("INFERENCE_LOG_URL") or section.inference_log_dir),
            window_records=section.window_records,
            min_window_records=section.min_window_records,
            drift_share_threshold=section.drift_share_threshold,
            prediction_psi_threshold=section.prediction_psi_threshold,
            model_package=section.model_package,
            importance=Path(section.importance) if section.importance else None,
            quality_drop_fraction=section.quality_drop_fraction,
            quality_min_labelled=section.quality_min_labelled,
            report_dir=Path(section.report_dir),
            alert_dedup_hours=section.alert_dedup_hours,
            pushgateway_url=env.get("PUSHGATEWAY_URL") or section.pushgateway_url or None,
            webhook_url=env.get("ALERT_WEBHOOK_URL") or section.webhook_url or None,
            alertmanager_url=env.get("ALERTMANAGER_URL") or section.alertmanager_url or None,
        )

    @classmethod
    def from_params(cls, params: Params | Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Settings:
        """Settings from the whole params (typed, or a mapping as read from YAML); see :meth:`from_section`.

        An unknown or malformed key of the section raises ParamsError naming it.
        """
        if isinstance(params, Params):
            return cls.from_section(params.monitoring, env)
        return cls.from_section(MonitoringSection.parse(params.get("monitoring")), env)


@dataclass(frozen=True)
class Window:
    """Which log records a job looks at: the newest ``last_n``, within ``[since, until)``."""

    last_n: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def read(self, log_dir: Path | str) -> pd.DataFrame:
        """The log records in this window, oldest first."""
        return read_log(log_dir, since=self.since, until=self.until, last_n=self.last_n)

    def describe(self, frame: pd.DataFrame) -> dict[str, Any]:
        """JSON-ready account of the window asked for and the time span actually found."""
        found = not frame.empty
        return {
            "records": len(frame),
            "last_n": self.last_n,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "first_ts": frame["ts"].min().isoformat() if found else None,
            "last_ts": frame["ts"].max().isoformat() if found else None,
        }


def log_location(value: Path | str) -> Path | str:
    """An inference-log location: an ``s3://`` prefix as is, anything else as a local path."""
    return value if objectstore.is_url(value) else Path(value)


def publish(registry: Any, job: str, textfile: Path, pushgateway_url: str | None) -> None:
    """Write the gauges as a Prometheus textfile and push them when a Pushgateway is given.

    The textfile is replaced atomically, as node-exporter's textfile collector requires. A failed
    push is logged, not raised: the report and the alert matter more than the gauges.
    """
    from prometheus_client import push_to_gateway, write_to_textfile

    textfile.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(textfile), registry)
    if pushgateway_url:
        try:
            push_to_gateway(pushgateway_url, job=job, registry=registry, timeout=10)
        except Exception:
            logger.exception("push to Pushgateway %s failed", pushgateway_url)
