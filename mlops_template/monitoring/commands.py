"""The monitoring jobs' command lines, made for cron: ``mlops-template drift`` and ``mlops-template quality``.

Settings come from the ``monitoring`` section of params.yaml; flags override them. ``drift`` weighs
the input columns by the served model's importance and compares its answers with its answers on the
reference: both need the model's package (``monitoring.model_package``: the champion's, found
through ``deployments/champion.json``, or a folder; ``--model-package ''`` for none), and the
importance (the package's ``importance.json``, else ``monitoring.importance``). Exit codes
(:class:`~mlops_template.core.exitcodes.ExitCode`): 0 all well (or too few records / labels to
judge: ``min_window_records``, ``quality_min_labelled``), 6 input drift, prediction drift or a
quality drop was detected (and alerted), 65 an input is wrong (a labels file without a needed
column or with labels that are not the contract's classes or numbers, an empty window, a missing
file, a malformed importance file), 1 the job failed. One summary line goes to standard output;
details go to the log (standard error) and the report files; a wrong input is one line
``mlops-template drift: error: ...`` on standard error.

Examples::

    mlops-template drift --last-n 5000
    mlops-template drift --since 2025-01-01T00:00:00Z --pushgateway http://pg:9091
    mlops-template quality --labels labels/2025-01-31.csv
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path

from mlops_template.core import paths
from mlops_template.core.contract import Contract, load_contract
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.params import load as load_params
from mlops_template.core.tasks import Task, task_of
from mlops_template.monitoring import EVALUATION_PATH, REFERENCE_PATH, Settings, Window, log_location
from mlops_template.monitoring.alerts import AlertSink

logger = logging.getLogger("mlops_template.monitoring")
SHOWN_AS = {"value_per_row": "value/row"}  # how the quality line names a live figure


def _timestamp(text: str) -> datetime:
    """An ISO-8601 time; one without a zone is taken as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options drift and quality share."""
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    parser.add_argument("--log-dir", type=log_location,
                        help="inference log folder or s3:// prefix (default: params, INFERENCE_LOG_URL)")
    parser.add_argument("--report-dir", type=Path, help="reports, gauges and alert state (default: params)")
    parser.add_argument("--last-n", type=int, help="newest N records (drift default: window_records)")
    parser.add_argument("--since", type=_timestamp, help="records at or after this ISO-8601 time")
    parser.add_argument("--until", type=_timestamp, help="records before this ISO-8601 time")
    parser.add_argument("--pushgateway", help="Pushgateway URL (default: $PUSHGATEWAY_URL, then params)")
    parser.add_argument("--webhook", help="alert webhook URL (default: $ALERT_WEBHOOK_URL, then params)")


def add_drift_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template drift``."""
    _common_arguments(parser)
    parser.add_argument("--reference", type=Path, default=REFERENCE_PATH)
    parser.add_argument("--threshold", type=float, help="drifted-share threshold (default: params)")
    parser.add_argument("--model-package", help="the served model's package folder, 'champion' (its record), "
                        "or '' for none (default: monitoring.model_package)")
    parser.add_argument("--importance", type=Path,
                        help="importance file when the package has none (default: monitoring.importance)")
    parser.set_defaults(job="drift")


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mlops-template quality``."""
    _common_arguments(parser)
    parser.add_argument("--labels", type=Path, required=True, help="ground truth .csv or .jsonl")
    parser.add_argument("--baseline", type=Path, default=EVALUATION_PATH)
    parser.set_defaults(job="quality")


def handle_drift(args: argparse.Namespace) -> int:
    """Run the drift job once."""
    return _run(args)


def handle_quality(args: argparse.Namespace) -> int:
    """Run the quality job once; a missing labels file is refused before any work."""
    if not args.labels.is_file():
        raise UserError(f"--labels {args.labels}: no such file")
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    settings = Settings.from_params(params)
    contract = load_contract(params.data.contract)
    log_dir = args.log_dir or settings.inference_log_dir
    report_dir = args.report_dir or settings.report_dir
    pushgateway = args.pushgateway or settings.pushgateway_url
    webhook = None if settings.alertmanager_url else (args.webhook or settings.webhook_url)
    if settings.alertmanager_url:
        logger.info("alerts are notified by Alertmanager (%s) from the pushed gauges: the job's own "
                    "webhook is off, alerts go to the report folder's log only", settings.alertmanager_url)
        if not pushgateway:
            logger.warning("ALERTMANAGER_URL is set but no Pushgateway: no alert will reach Alertmanager")
    alerts = AlertSink(report_dir, webhook, settings.alert_dedup_hours)
    task = task_of(contract)
    if args.job == "drift":
        return _drift(args, settings, contract, task, log_dir, report_dir, alerts, pushgateway)
    from mlops_template.monitoring.quality import run_quality_job

    summary = run_quality_job(
        log_dir, args.labels, contract, Window(args.last_n, args.since, args.until), args.baseline,
        params.evaluate.value_matrix, settings.quality_drop_fraction,
        settings.quality_min_labelled, report_dir, alerts, pushgateway,
    )
    live = summary["live"]
    state = "DROP" if summary["quality_drop"] else ("too few labels" if not summary["enough_labels"] else "ok")
    shown = list(task.live_metrics)
    if "accuracy" in live and "accuracy" not in shown:
        shown.insert(1, "accuracy")
    figures = ", ".join(f"{SHOWN_AS.get(name, name)} {live.get(name)}" for name in shown)
    print(f"quality: {state}; {figures}, {live['labelled_records']} labelled; "
          f"largest drop {summary['drop_fraction']:.1%} (threshold {summary['threshold']:.0%})")
    return ExitCode.ALERT if summary["quality_drop"] else ExitCode.OK


def _drift(args: argparse.Namespace, settings: Settings, contract: Contract, task: Task, log_dir: Path | str,
           report_dir: Path, alerts: AlertSink, pushgateway: str | None) -> int:
    """Run the drift job with the served model's package and importance; print its line."""
    from mlops_template.monitoring.drift import run_drift_job
    from mlops_template.monitoring.model import (
        CHAMPION,
        ImportanceError,
        champion_version,
        find_importance,
        model_package,
    )

    time_bounded = args.since is not None or args.until is not None
    last_n = args.last_n or (None if time_bounded else settings.window_records)
    threshold = settings.drift_share_threshold if args.threshold is None else args.threshold
    setting = settings.model_package if args.model_package is None else args.model_package
    try:
        package = model_package(setting)
        importance = find_importance(package, args.importance or settings.importance)
    except (FileNotFoundError, ImportanceError) as exc:
        raise UserError(str(exc)) from exc
    summary = run_drift_job(log_dir, args.reference, contract, Window(last_n, args.since, args.until),
                            threshold, report_dir, alerts, pushgateway, settings.min_window_records,
                            importance=importance, package=package, task=task,
                            prediction_threshold=settings.prediction_psi_threshold,
                            model_version=champion_version() if package and setting == CHAMPION else None)
    state = ("DETECTED" if summary["drift_detected"]
             else "none" if summary["enough_records"] else "too few records")
    predictions = summary["predictions"]
    said = (f"predictions psi {predictions['psi']:.2f} (threshold {predictions['threshold']:.2f})"
            + (" DETECTED" if predictions["drift_detected"] else "")
            if predictions["compared"] else "predictions not compared")
    print(f"drift: {state}; "
          f"share {summary['drift_share']:.2f} (threshold {threshold:.2f}), "
          f"{summary['rows_current']} records; drifted: {', '.join(summary['drifted_columns']) or '-'}; "
          f"{said}; report {summary['report']}")
    detected = summary["drift_detected"] or predictions["drift_detected"]
    return ExitCode.ALERT if detected else ExitCode.OK
