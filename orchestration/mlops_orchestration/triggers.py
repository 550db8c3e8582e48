"""What starts the jobs: sensors on the incoming folder and the team's prefix, the schedules, a canary sensor.

- ``incoming_batches`` (sensor, every 60 s): new or changed batch files (``*.csv``, ``*.csv.gz``)
  in ``ingest.incoming`` (``data/incoming/``) start a retrain. The cursor holds the name, size and
  modification time of every file already handed to a retrain, so the same batch never starts a
  second run; a file modified within ``$INCOMING_SETTLE_S`` (10 s) is still being written and
  waits for the next tick. Batches leave the folder when retrain ingests or quarantines them.
- ``incoming_objects`` (sensor, every 60 s, team mode): with ``$INCOMING_URL``
  (``s3://bucket/prefix``) set, runs ``incoming list`` and starts a retrain for new or changed
  batch objects under that prefix (name, size, ETag and last-modified in the cursor, each object
  once; no settle time: an object appears whole). ``retrain`` fetches them into the incoming
  folder itself before guarding them (``mlops_template/ops/incoming.py``), so the same run
  works from cron too. Objects the project refuses (a nested or unsafe key, too large) are not
  listed, so they start nothing; ``incoming fetch`` logs them. Without ``$INCOMING_URL`` it skips.
- ``weekly_retrain`` (Mondays 03:17 UTC, like ``scripts/cron.example``), ``hourly_drift``,
  ``daily_quality`` (04:37 UTC, needs ``$QUALITY_LABELS``, the ground truth file; skipped without).
- ``canary_challenger_present`` (sensor, every 15 min): runs ``canary status`` and starts a
  canary decide while the routing document names a challenger.

Schedules and sensors start running with ``dagster dev`` (set ``ORCHESTRATION_AUTOSTART=0`` to
have them stopped until switched on in the UI).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import yaml
from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)

from mlops_orchestration import commands
from mlops_orchestration.jobs import canary_decide_job, drift_job, quality_job, retrain_job

BATCH_SUFFIXES = (".csv", ".csv.gz")
DEFAULT_INCOMING = "data/incoming"
INCOMING_URL_ENV = "INCOMING_URL"  # team mode: the object-store prefix batches land under


def _autostart() -> bool:
    return os.environ.get("ORCHESTRATION_AUTOSTART", "1") != "0"


SENSOR_STATUS = DefaultSensorStatus.RUNNING if _autostart() else DefaultSensorStatus.STOPPED
SCHEDULE_STATUS = DefaultScheduleStatus.RUNNING if _autostart() else DefaultScheduleStatus.STOPPED


def incoming_folder() -> Path:
    """``ingest.incoming`` of the repository's params.yaml (``data/incoming`` by default)."""
    root = commands.repo()
    try:
        params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        params = {}
    return root / ((params.get("ingest") or {}).get("incoming") or DEFAULT_INCOMING)


def batch_files(folder: Path) -> dict[str, list[int]]:
    """Every batch file in ``folder``: name -> [size, modification time in ns]."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(BATCH_SUFFIXES):
            stat = path.stat()
            found[path.name] = [stat.st_size, stat.st_mtime_ns]
    return found


def new_batches(seen: dict[str, list], now: dict[str, list], settle_s: float | None,
                clock: float) -> tuple[dict[str, list], dict[str, list]]:
    """(batches to retrain on, the new cursor): files new or changed since ``seen`` and settled for
    ``settle_s`` (``None``: no settling, for objects, which appear whole; a file's state is then
    anything comparable). Files still settling stay out of the cursor, so a later tick picks them up;
    files gone (ingested) leave it, so a batch of the same name arriving later starts a run again."""
    fresh = {name: state for name, state in now.items() if seen.get(name) != state}
    ready = fresh if settle_s is None else {name: state for name, state in fresh.items()
                                            if clock - state[1] / 1e9 >= settle_s}
    cursor = {name: state for name, state in now.items() if name not in fresh or name in ready}
    return ready, cursor


@sensor(job=retrain_job, minimum_interval_seconds=60, default_status=SENSOR_STATUS)
def incoming_batches(context: SensorEvaluationContext):
    """Start a retrain when a new batch lands in the incoming folder (once per batch)."""
    folder = incoming_folder()
    seen = json.loads(context.cursor) if context.cursor else {}
    settle = float(os.environ.get("INCOMING_SETTLE_S", "10"))
    ready, cursor = new_batches(seen, batch_files(folder), settle, time.time())
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not ready:
        return SkipReason(f"no new batch in {folder}")
    return retrain_request("incoming", ready)


def retrain_request(trigger: str, ready: dict[str, list]) -> RunRequest:
    """One retrain for these new batches, keyed by them: the same batches never start two runs."""
    key = hashlib.sha256(json.dumps(ready, sort_keys=True).encode()).hexdigest()[:16]
    return RunRequest(run_key=f"{trigger}-{key}",
                      tags={"mlops/trigger": trigger, "mlops/batches": ",".join(sorted(ready))[:200]})


def command_summary(*words: str) -> dict | SkipReason:
    """The JSON summary line of a project command (``canary status``, ``incoming list``), or why not."""
    try:
        done = commands.run(*words, timeout=120)
    except commands.ProjectEnvMissing as exc:
        return SkipReason(str(exc))
    if done.code != 0:
        return SkipReason(f"{' '.join(words)} exited {done.code}: {done.tail(3)}")
    return done.summary


def batch_objects() -> dict[str, list] | SkipReason:
    """``incoming list`` in the project's environment: name -> [size, ETag, last-modified], or why not."""
    summary = command_summary("incoming", "list")
    if isinstance(summary, SkipReason):
        return summary
    return {name: state for name, state in summary.items() if isinstance(state, list)}


@sensor(job=retrain_job, minimum_interval_seconds=60, default_status=SENSOR_STATUS)
def incoming_objects(context: SensorEvaluationContext):
    """Team mode: start a retrain when a new batch object lands under ``$INCOMING_URL`` (once per object)."""
    url = os.environ.get(INCOMING_URL_ENV, "").strip()
    if not url:
        return SkipReason(f"{INCOMING_URL_ENV} is not set: no object-store prefix to watch")
    now = batch_objects()
    if isinstance(now, SkipReason):
        return now  # the cursor stays: the next tick compares with what was seen before
    seen = json.loads(context.cursor) if context.cursor else {}
    ready, cursor = new_batches(seen, now, None, time.time())
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not ready:
        return SkipReason(f"no new batch object under {url}")
    return retrain_request("incoming-objects", ready)


@schedule(job=retrain_job, cron_schedule="17 3 * * 1", execution_timezone="UTC", default_status=SCHEDULE_STATUS)
def weekly_retrain(context: ScheduleEvaluationContext):
    """Weekly retrain (also reruns the pipeline when an earlier run died after ingesting)."""
    return RunRequest(tags={"mlops/trigger": "weekly"})


@schedule(job=drift_job, cron_schedule="7 * * * *", execution_timezone="UTC", default_status=SCHEDULE_STATUS)
def hourly_drift(context: ScheduleEvaluationContext):
    """Hourly drift check."""
    return RunRequest(tags={"mlops/trigger": "hourly"})


@schedule(job=quality_job, cron_schedule="37 4 * * *", execution_timezone="UTC", default_status=SCHEDULE_STATUS)
def daily_quality(context: ScheduleEvaluationContext):
    """Daily quality check against ``$QUALITY_LABELS`` (a path in the repository); skipped without it."""
    labels = os.environ.get("QUALITY_LABELS", "")
    if not labels or not (commands.repo() / labels).is_file():
        return SkipReason(f"QUALITY_LABELS={labels!r} names no file in {commands.repo()}: nothing to score")
    return RunRequest(run_config={"ops": {"quality": {"config": {"labels": labels}}}},
                      tags={"mlops/trigger": "daily"})


@sensor(job=canary_decide_job, minimum_interval_seconds=900, default_status=SENSOR_STATUS)
def canary_challenger_present(context: SensorEvaluationContext):
    """Start a canary decide while ``canary status`` names a challenger (each run waits, promotes or rolls back)."""
    summary = command_summary("canary", "status")
    if isinstance(summary, SkipReason):
        return summary
    challenger = summary.get("challenger")
    if not challenger:
        return SkipReason("no challenger in the routing document")
    return RunRequest(tags={"mlops/trigger": "challenger", "mlops/challenger": str(challenger.get("model_version"))})


SCHEDULES = [weekly_retrain, hourly_drift, daily_quality]
SENSORS = [incoming_batches, incoming_objects, canary_challenger_present]
