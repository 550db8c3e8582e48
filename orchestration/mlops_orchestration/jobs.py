"""The jobs: retrain, drift, quality, canary decide and rollback, each one project command.

Every op runs ``mlops-template <command>`` through :func:`mlops_orchestration.commands.run` and
ends through :func:`mlops_orchestration.outcomes.conclude`; the metadata it adds says what the
command decided (the gate's blessing and reasons, the candidate and champion versions) and where
its reports are, read from the files the command wrote (``metrics/gate.json``,
``deployments/champion.json``, the monitoring reports) and from its JSON summary line.

No ``from __future__ import annotations`` here: Dagster resolves the config classes from the ops'
annotations at definition time.
"""

import os
import re
import time
from pathlib import Path
from typing import Any

from dagster import Config, Failure, MetadataValue, OpExecutionContext, Out, Output, job, op

from mlops_orchestration import commands
from mlops_orchestration.outcomes import conclude, execute, path_value, retry_policy

GATE, CHAMPION, HISTORY = "metrics/gate.json", "deployments/champion.json", "deployments/history.jsonl"
DEFAULT_REPORT_DIR = "monitoring/reports"


def deployment_metadata(since: float) -> dict[str, Any]:
    """The gate's decision (when this run wrote ``metrics/gate.json``) and the versions serving now."""
    metadata: dict[str, Any] = {}
    gate = commands.read_json(GATE) if commands.written_since(GATE, since) else None
    if gate is not None:
        metadata["gate_blessed"] = bool(gate.get("blessed"))
        metadata["gate_reasons"] = "; ".join(gate.get("reasons") or [])
        metadata["candidate_version"] = str((gate.get("candidate") or {}).get("model_version"))
        metadata["gate_report"] = path_value(GATE)
    record = commands.read_json(CHAMPION)
    if record is not None:
        metadata["champion_version"] = str((record.get("champion") or {}).get("model_version"))
        challenger = record.get("challenger") or {}
        metadata["challenger_version"] = str(challenger.get("model_version")) if challenger else "none"
        decision = record.get("last_decision") or {}
        metadata["last_decision"] = f"{decision.get('action')} at {decision.get('at')}"
        metadata["deployment_record"] = path_value(CHAMPION)
        metadata["history"] = path_value(HISTORY)
    return metadata


class RetrainConfig(Config):
    """Options of ``mlops-template retrain``: where batches come from, and whether to commit."""

    incoming: str | None = None  # a batch file or folder; default ingest.incoming (data/incoming)
    commit: bool = True  # commit dvc.lock, metrics/, deployments/ and the batches, as cron does


@op(retry_policy=retry_policy(), tags={"kind": "mlops-template"})
def retrain(context: OpExecutionContext, config: RetrainConfig) -> dict:
    """Fetch the team's batch objects (with ``$INCOMING_URL``), guard new batches, ``dvc repro``, gate,
    deploy (``mlops-template retrain``, which fetches first itself, as it does from cron)."""
    words = ["retrain", *(["--incoming", config.incoming] if config.incoming else []),
             *(["--commit"] if config.commit else [])]
    started = time.time()
    done = execute(*words)
    summary = done.summary
    extra = deployment_metadata(started)
    for key in ("status", "promoted", "roc_auc", "candidate_version", "champion_version"):
        if summary.get(key) is not None:
            extra[key if key not in extra else f"summary_{key}"] = summary[key]
    fetch = summary.get("fetch") or {}
    if fetch:  # team mode: what retrain took from $INCOMING_URL before guarding it
        extra["fetched_objects"] = ", ".join(fetch.get("fetched") or []) or "none"
        left = [f"{e.get('name') or e.get('key')}: {e.get('reason')}" for e in
                [*(fetch.get("left") or []), *(fetch.get("refused") or [])]]
        if left:
            extra["objects_left_in_bucket"] = "\n".join(left)
    reports = [f"metrics/ingest/{b['batch']}.report.json" for b in summary.get("accepted", [])]
    reports += [f"{q['path']}.report.json" for q in summary.get("quarantined", []) if q.get("path")]
    if reports:
        extra["batch_reports"] = "\n".join(str(commands.repo() / r) for r in reports)
    metadata = conclude(context, done, extra)
    context.add_output_metadata(metadata)
    return summary


def monitoring_metadata(stdout: str, name: str) -> dict[str, Any]:
    """The report paths of a drift or quality run: the printed HTML report's folder, else the default."""
    found = re.search(r"report (\S+)", stdout)
    folder = Path(found[1]).parent if found else Path(DEFAULT_REPORT_DIR)
    report = commands.repo() / folder / f"{name}.json"
    metadata: dict[str, Any] = {"report": str(report)}
    if found:
        metadata["html_report"] = str(commands.repo() / found[1])
    values = commands.read_json(str(report.relative_to(commands.repo()))) if report.exists() else None
    for key in ("drift_detected", "drift_share", "quality_drop", "drop_fraction", "rows_current"):
        if values and key in values and isinstance(values[key], (bool, int, float)):
            metadata[key] = values[key]
    return metadata


class DriftConfig(Config):
    """Options of ``mlops-template drift``."""

    last_n: int | None = None  # newest N records (default monitoring.window_records)


@op(retry_policy=retry_policy(), tags={"kind": "mlops-template"})
def drift(context: OpExecutionContext, config: DriftConfig) -> dict:
    """Compare recent inputs with the reference sample (``mlops-template drift``); 6 tags the run an alert."""
    done = execute("drift", *(["--last-n", str(config.last_n)] if config.last_n else []))
    context.add_output_metadata(conclude(context, done, monitoring_metadata(done.stdout, "drift")))
    return {"exit_code": done.code, "line": done.stdout.strip().splitlines()[-1:]}


class QualityConfig(Config):
    """Options of ``mlops-template quality``: the ground truth is required."""

    labels: str  # .csv or .jsonl with request_id, record_index, label (relative to the repository)


@op(retry_policy=retry_policy(), tags={"kind": "mlops-template"})
def quality(context: OpExecutionContext, config: QualityConfig) -> dict:
    """Score logged predictions against ground truth (``mlops-template quality``); 6 tags the run an alert."""
    done = execute("quality", "--labels", config.labels)
    context.add_output_metadata(conclude(context, done, monitoring_metadata(done.stdout, "quality")))
    return {"exit_code": done.code, "line": done.stdout.strip().splitlines()[-1:]}


@op(out={"challenger": Out(dict, is_required=False)}, tags={"kind": "mlops-template"})
def canary_challenger(context: OpExecutionContext):
    """``mlops-template canary status``: yield the challenger when the routing document names one.

    Nothing is yielded without a challenger, so the decide step is skipped and the run says why.
    """
    done = execute("canary", "status")
    if done.code != 0:
        raise Failure(description=f"{done.line} exited {done.code}: is anything deployed yet?",
                      metadata={"output": done.tail()}, allow_retries=False)
    challenger = done.summary.get("challenger")
    if not challenger:
        context.log.info("no challenger in the routing document: nothing to decide, decide is skipped")
        return
    yield Output(challenger, "challenger", metadata={"challenger_version": str(challenger.get("model_version")),
                                                     "routing": MetadataValue.json(done.summary)})


class CanaryConfig(Config):
    """Where ``canary decide`` reads its figures: one of these (default ``$CANARY_PROMETHEUS_URL``,
    else ``$CANARY_METRICS_URL``), optional ground truth, and a dry run."""

    prometheus_url: str | None = None
    metrics_url: str | None = None
    metrics_file: str | None = None
    labels: str | None = None
    min_requests: int | None = None
    dry_run: bool = False


def canary_source(config: CanaryConfig) -> list[str]:
    """The figures' source option of ``canary decide``; a clear Failure when none or several are given."""
    given = [(flag, value) for flag, value in (("--prometheus-url", config.prometheus_url),
                                               ("--metrics-url", config.metrics_url),
                                               ("--metrics-file", config.metrics_file)) if value]
    if not given:
        given = [(flag, os.environ[name]) for flag, name in (("--prometheus-url", "CANARY_PROMETHEUS_URL"),
                                                             ("--metrics-url", "CANARY_METRICS_URL"))
                 if os.environ.get(name)][:1]
    if len(given) != 1:
        raise Failure(description="canary decide needs exactly one of prometheus_url, metrics_url, metrics_file "
                      "(or $CANARY_PROMETHEUS_URL / $CANARY_METRICS_URL)", allow_retries=False)
    return list(given[0])


@op(retry_policy=retry_policy(), tags={"kind": "mlops-template"})
def canary_decide(context: OpExecutionContext, config: CanaryConfig, challenger: dict) -> dict:
    """``mlops-template canary decide``: promote (0), roll back (5, an alert) or wait (4) for more traffic."""
    words = ["canary", "decide", *canary_source(config)]
    words += ["--labels", config.labels] if config.labels else []
    words += ["--min-requests", str(config.min_requests)] if config.min_requests is not None else []
    words += ["--dry-run"] if config.dry_run else []
    started = time.time()
    done = execute(*words)
    extra = {"action": str(done.summary.get("action")), "reasons": "; ".join(done.summary.get("reasons") or []),
             "challenger_was": str(challenger.get("model_version")), **deployment_metadata(started)}
    context.add_output_metadata(conclude(context, done, extra))
    return done.summary


class RollbackConfig(Config):
    """Options of ``mlops-template rollback``: the version to restore (default the previous champion)."""

    to: str | None = None
    reason: str = "rollback from Dagster"
    commit: bool = True  # commit deployments/, so a later retrain --commit does not sweep it up


@op(retry_policy=retry_policy(), tags={"kind": "mlops-template"})
def rollback(context: OpExecutionContext, config: RollbackConfig) -> dict:
    """``mlops-template rollback [--to V]``: serve an earlier champion again (manual job, no schedule)."""
    words = ["rollback", *(["--to", config.to] if config.to else []), "--reason", config.reason,
             *(["--commit"] if config.commit else [])]
    started = time.time()
    done = execute(*words)
    extra = {key: str(done.summary[key]) for key in ("from_version", "to_version") if key in done.summary}
    context.add_output_metadata(conclude(context, done, {**extra, **deployment_metadata(started)}))
    return done.summary


@job(tags={"mlops/command": "retrain"})
def retrain_job():
    """Fetch (team mode), guard, retrain, gate and deploy on new batches (started by the incoming
    sensors and weekly)."""
    retrain()


@job(tags={"mlops/command": "drift"})
def drift_job():
    """Hourly drift check of the inference log against the reference sample."""
    drift()


@job(tags={"mlops/command": "quality"})
def quality_job():
    """Daily live-quality check against ground truth."""
    quality()


@job(tags={"mlops/command": "canary decide"})
def canary_decide_job():
    """Promote or roll back the challenger; skipped while the routing document names none."""
    canary_decide(canary_challenger())


@job(tags={"mlops/command": "rollback"})
def rollback_job():
    """Serve an earlier champion again; launched by hand from the UI (config: ``to``)."""
    rollback()


JOBS = [retrain_job, drift_job, quality_job, canary_decide_job, rollback_job]
