"""CLI for the monitoring jobs, made for cron: ``python -m mlops_template.monitoring drift|quality``.

Settings come from the ``monitoring`` section of params.yaml; flags override them. Exit codes:
0 all well (or too few records / labels to judge: ``min_window_records``, ``quality_min_labelled``),
3 drift or a quality drop was detected (and alerted), 1 the job failed. One summary
line goes to standard output; details go to the log (standard error) and the report files.

Examples::

    python -m mlops_template.monitoring drift --last-n 5000
    python -m mlops_template.monitoring drift --since 2025-01-01T00:00:00Z --pushgateway http://pg:9091
    python -m mlops_template.monitoring quality --labels labels/2025-01-31.csv
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path

from mlops_template.core import paths
from mlops_template.core.config import load_params, setup_logging
from mlops_template.core.contract import load_contract
from mlops_template.monitoring import (
    EVALUATION_PATH,
    EXIT_ALERT,
    EXIT_ERROR,
    EXIT_OK,
    REFERENCE_PATH,
    Settings,
    Window,
    log_location,
)
from mlops_template.monitoring.alerts import AlertSink

logger = logging.getLogger("mlops_template.monitoring")


def _timestamp(text: str) -> datetime:
    """An ISO-8601 time; one without a zone is taken as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", type=Path, default=paths.PARAMS)
    common.add_argument("--log-dir", type=log_location,
                        help="inference log folder or s3:// prefix (default: params, INFERENCE_LOG_URL)")
    common.add_argument("--report-dir", type=Path, help="reports, gauges and alert state (default: params)")
    common.add_argument("--last-n", type=int, help="newest N records (drift default: window_records)")
    common.add_argument("--since", type=_timestamp, help="records at or after this ISO-8601 time")
    common.add_argument("--until", type=_timestamp, help="records before this ISO-8601 time")
    common.add_argument("--pushgateway", help="Pushgateway URL (default: $PUSHGATEWAY_URL, then params)")
    common.add_argument("--webhook", help="alert webhook URL (default: $ALERT_WEBHOOK_URL, then params)")
    common.add_argument("--debug", action="store_true", help="log the traceback of a failure")
    parser = argparse.ArgumentParser(prog="python -m mlops_template.monitoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    drift = sub.add_parser("drift", parents=[common], help="compare recent inputs with the reference sample")
    drift.add_argument("--reference", type=Path, default=REFERENCE_PATH)
    drift.add_argument("--threshold", type=float, help="drifted-share threshold (default: params)")
    quality = sub.add_parser("quality", parents=[common], help="score logged predictions against ground truth")
    quality.add_argument("--labels", type=Path, required=True, help="ground truth .csv or .jsonl")
    quality.add_argument("--baseline", type=Path, default=EVALUATION_PATH)
    return parser


def _run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    settings = Settings.from_params(params)
    contract = load_contract(params["data"]["contract"])
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
    if args.job == "drift":
        from mlops_template.monitoring.drift import run_drift_job

        time_bounded = args.since is not None or args.until is not None
        last_n = args.last_n or (None if time_bounded else settings.window_records)
        threshold = settings.drift_share_threshold if args.threshold is None else args.threshold
        summary = run_drift_job(log_dir, args.reference, contract, Window(last_n, args.since, args.until),
                                threshold, report_dir, alerts, pushgateway, settings.min_window_records)
        state = ("DETECTED" if summary["drift_detected"]
                 else "none" if summary["enough_records"] else "too few records")
        print(f"drift: {state}; "
              f"share {summary['drift_share']:.2f} (threshold {threshold:.2f}), "
              f"{summary['rows_current']} records; drifted: {', '.join(summary['drifted_columns']) or '-'}; "
              f"report {summary['report']}")
        return EXIT_ALERT if summary["drift_detected"] else EXIT_OK
    from mlops_template.monitoring.quality import run_quality_job

    summary = run_quality_job(
        log_dir, args.labels, contract, Window(args.last_n, args.since, args.until), args.baseline,
        params["evaluate"]["value_matrix"], settings.quality_drop_fraction,
        settings.quality_min_labelled, report_dir, alerts, pushgateway,
    )
    live = summary["live"]
    state = "DROP" if summary["quality_drop"] else ("too few labels" if not summary["enough_labels"] else "ok")
    print(f"quality: {state}; roc_auc {live['roc_auc']}, accuracy {live['accuracy']}, "
          f"value/row {live['value_per_row']}, {live['labelled_records']} labelled; "
          f"largest drop {summary['drop_fraction']:.1%} (threshold {summary['threshold']:.0%})")
    return EXIT_ALERT if summary["quality_drop"] else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run one job; return its exit code (errors are logged and give 1)."""
    args = _parser().parse_args(argv)
    setup_logging()
    try:
        return _run(args)
    except Exception as exc:
        # A wrong input (a labels file, a window, a path) is explained by its message: the
        # traceback only buries it, so it is logged with --debug alone.
        logger.error("%s job failed", args.job, exc_info=args.debug)
        print(f"{args.job}: ERROR {type(exc).__name__}: {exc}")
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
