"""Each job executed for real, in process, on a fresh clone: the outcomes its exit codes map to.

The tests run in file order on one clone (a retrain takes a minute here): the sensor and a retrain
that first meets the lock (75) and succeeds on its retry, then a quarantined batch (2), drift and
quality alerts (6), a canary that waits (4) then is rolled back (5), a manual rollback, a wrong
input (65).
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
import uuid
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, RunRequest, SkipReason, build_sensor_context

from conftest import BATCH_ROWS, CHECKOUT, RETRY_DELAY_S, TRAIN_ROWS, Repo, copy_batch, read_rows, write_rows
from mlops_orchestration.jobs import canary_decide_job, drift_job, quality_job, retrain_job, rollback_job
from mlops_orchestration.outcomes import ALERT_TAG, OUTCOME_TAG
from mlops_orchestration.triggers import incoming_batches


def evaluate(instance: DagsterInstance, cursor: str | None):
    """One tick of the incoming sensor: (its RunRequests or SkipReason, the cursor it left)."""
    context = build_sensor_context(instance=instance, cursor=cursor)
    result = incoming_batches(context)
    return result, context.cursor


def step_events(instance: DagsterInstance, run_id: str, kind: DagsterEventType) -> list:
    """The events of ``kind`` a run has logged so far."""
    return [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type == kind]


def tags(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """The run's tags as stored (the outcome tags are added while the op runs)."""
    return dict(instance.get_run_by_id(run_id).tags)


def metadata(result, op: str) -> dict:
    """The metadata of ``op``'s output events, as plain values."""
    found = {}
    for event in result.events_for_node(op):
        if event.event_type == DagsterEventType.STEP_OUTPUT:
            found.update({k: getattr(v, "value", v) for k, v in event.step_output_data.metadata.items()})
    return found


def test_sensor_starts_a_retrain_that_retries_on_the_lock(repo: Repo, instance: DagsterInstance):
    result, cursor = evaluate(instance, None)
    assert isinstance(result, SkipReason), result  # nothing incoming yet

    batch = copy_batch(repo.batches[0], repo.path / "data/incoming")
    request, cursor = evaluate(instance, cursor)
    assert isinstance(request, RunRequest) and request.run_key, request
    assert request.tags["mlops/batches"] == batch.name
    again, cursor = evaluate(instance, cursor)
    assert isinstance(again, SkipReason), "the same batch must not start a second retrain"

    lock_path = repo.path / ".dvc/tmp/retrain.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = open(lock_path, "a+", encoding="utf-8")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another operator holds the transition lock
    run_id = str(uuid.uuid4())
    released = threading.Event()

    def release_after_first_attempt() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if step_events(instance, run_id, DagsterEventType.STEP_UP_FOR_RETRY):
                holder.close()  # the kernel drops the flock
                released.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=release_after_first_attempt, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        result = retrain_job.execute_in_process(instance=instance, run_id=run_id, tags=request.tags,
                                                run_config=request.run_config or None, raise_on_error=False)
    finally:
        holder.close()
    watcher.join(5)

    assert released.is_set(), "the first attempt never asked for a retry"
    retries = step_events(instance, run_id, DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 1, [e.message for e in retries]
    assert "exited 75 (locked)" in str(retries[0].dagster_event.event_specific_data.error), retries[0]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert time.monotonic() - started > RETRY_DELAY_S  # the retry waited out its backoff
    found = metadata(result, "retrain")
    assert found["exit_code"] == 0 and found["status"] == "promoted", found
    assert found["gate_blessed"] is True and found["candidate_version"] == found["champion_version"] == "2", found
    assert Path(found["gate_report"]).name == "gate.json"
    assert Path(found["batch_reports"]).is_file(), found["batch_reports"]
    assert tags(instance, run_id)[OUTCOME_TAG] == "ok"
    assert not (repo.path / "data/incoming" / batch.name).exists()
    assert (repo.path / "data/raw" / batch.name).exists()
    log = repo.run("git", "log", "-1", "--format=%s").stdout
    assert log.startswith("retrain: adult-income v2 promoted"), log

    after, cursor = evaluate(instance, cursor)
    assert isinstance(after, SkipReason), "an ingested batch must not start another retrain"


def test_every_batch_quarantined_fails_the_run_without_retry(repo: Repo, instance: DagsterInstance, tmp_path: Path):
    header, rows = read_rows(repo.batches[1])
    tiny = write_rows(tmp_path / "2026-12-03-tiny.csv.gz", header, rows[:20])  # under ingest.min_rows

    result = retrain_job.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"retrain": {"config": {"incoming": str(tiny), "commit": False}}}})

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "exited 2 (quarantined)" in failure.message or "exited 2 (quarantined)" in str(
        failure.event_specific_data.error), failure
    assert not step_events(instance, result.run_id, DagsterEventType.STEP_UP_FOR_RETRY)
    found = {k: getattr(v, "value", v) for k, v in failure.event_specific_data.user_failure_data.metadata.items()}
    assert found["exit_code"] == 2 and found["outcome"] == "quarantined", found
    assert Path(found["batch_reports"]).is_file(), found["batch_reports"]
    assert tags(instance, result.run_id)[ALERT_TAG] == "true"


def log_entries(rows: list[list[str]], header: list[str], prefix: str) -> list[dict]:
    """Inference-log entries for Adult rows, as the service writes them (features as sent)."""
    inputs = [c for c in header if c != "income"]

    def value(text: str):
        text = text.strip()
        if text in ("", "?"):
            return None
        return int(text) if text.lstrip("-").isdigit() else text

    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return [{"ts": now, "request_id": f"{prefix}-{i}", "record_index": 0, "model_version": "2",
             "features": {c: value(row[header.index(c)]) for c in inputs}, "probability": 0.5, "label": "<=50K"}
            for i, row in enumerate(rows)]


def test_drift_and_quality_alerts_are_successes_tagged_alert(repo: Repo, instance: DagsterInstance):
    header, rows = read_rows(CHECKOUT / "data/raw/adult.csv.gz")
    unseen = rows[TRAIN_ROWS + 2 * BATCH_ROWS:]  # rows neither trained on nor held back
    degree = header.index("education")
    shifted = [r for r in unseen if r[degree].strip() in ("Bachelors", "Masters", "Doctorate")][:600]
    assert len(shifted) == 600
    entries = log_entries(shifted, header, "req")
    folder = repo.path / "monitoring/inference-log"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inference-1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")

    drifted = drift_job.execute_in_process(instance=instance)

    assert drifted.success
    found = metadata(drifted, "drift")
    assert found["exit_code"] == 6 and found["drift_detected"] is True, found
    assert Path(found["report"]).is_file()
    assert tags(instance, drifted.run_id)[OUTCOME_TAG] == "alert"
    assert tags(instance, drifted.run_id)[ALERT_TAG] == "true"

    income = header.index("income")
    labels = repo.path / "labels.csv"
    labels.write_text("request_id,record_index,label\n" + "".join(
        f"{e['request_id']},0,{row[income].strip()}\n" for e, row in zip(entries, shifted, strict=True)))
    scored = quality_job.execute_in_process(instance=instance,
                                            run_config={"ops": {"quality": {"config": {"labels": "labels.csv"}}}})

    assert scored.success
    found = metadata(scored, "quality")
    assert found["exit_code"] == 6 and found["quality_drop"] is True, found  # a constant 0.5 ranks nothing
    assert tags(instance, scored.run_id)[OUTCOME_TAG] == "alert"


def metrics_text(champion: str, challenger: str, challenger_ok: int, challenger_errors: int) -> str:
    """A /metrics exposition with per-version request outcomes and latency, as the service exports."""
    lines = ["# TYPE model_version_requests_total counter"]
    for version, ok, errors in ((champion, 1000, 0), (challenger, challenger_ok, challenger_errors)):
        lines += [f'model_version_requests_total{{model_version="{version}",outcome="success"}} {ok}',
                  f'model_version_requests_total{{model_version="{version}",outcome="error"}} {errors}']
    lines.append("# TYPE model_prediction_latency_seconds summary")
    for version, count in ((champion, 1000), (challenger, challenger_ok + challenger_errors)):
        lines += [f'model_prediction_latency_seconds_sum{{model_version="{version}"}} {count * 0.002}',
                  f'model_prediction_latency_seconds_count{{model_version="{version}"}} {count}']
    return "\n".join(lines) + "\n"


def test_canary_decide_skips_waits_and_rolls_back(repo: Repo, instance: DagsterInstance, tmp_path: Path):
    idle = canary_decide_job.execute_in_process(instance=instance)
    assert idle.success
    assert [e.node_name for e in idle.all_events if e.event_type == DagsterEventType.STEP_SKIPPED] == ["canary_decide"]

    repo.project("canary", "start", "--version", "1", "--reason", "orchestration test")
    few = tmp_path / "few.prom"
    few.write_text(metrics_text("2", "1", 10, 0))
    waiting = canary_decide_job.execute_in_process(
        instance=instance, run_config={"ops": {"canary_decide": {"config": {"metrics_file": str(few)}}}})
    assert waiting.success
    found = metadata(waiting, "canary_decide")
    assert found["exit_code"] == 4 and found["action"] == "wait" and found["challenger_was"] == "1", found
    assert tags(instance, waiting.run_id)[OUTCOME_TAG] == "wait"
    assert ALERT_TAG not in tags(instance, waiting.run_id)

    bad = tmp_path / "bad.prom"
    bad.write_text(metrics_text("2", "1", 200, 50))
    rolled = canary_decide_job.execute_in_process(
        instance=instance, run_config={"ops": {"canary_decide": {"config": {"metrics_file": str(bad)}}}})
    assert rolled.success
    found = metadata(rolled, "canary_decide")
    assert found["exit_code"] == 5 and found["action"] == "rollback", found
    assert found["champion_version"] == "2" and found["challenger_version"] == "none", found
    assert tags(instance, rolled.run_id)[ALERT_TAG] == "true"


def test_manual_rollback_and_a_wrong_input(repo: Repo, instance: DagsterInstance):
    back = rollback_job.execute_in_process(instance=instance,
                                           run_config={"ops": {"rollback": {"config": {"to": "1"}}}})
    assert back.success
    found = metadata(back, "rollback")
    assert (found["from_version"], found["to_version"], found["champion_version"]) == ("2", "1", "1"), found
    assert json.loads((repo.path / "deployments/champion.json").read_text())["champion"]["model_version"] == "1"

    wrong = quality_job.execute_in_process(instance=instance, raise_on_error=False,
                                           run_config={"ops": {"quality": {"config": {"labels": "no-such.csv"}}}})
    assert not wrong.success
    assert tags(instance, wrong.run_id)[OUTCOME_TAG] == "bad_input"
    assert not step_events(instance, wrong.run_id, DagsterEventType.STEP_UP_FOR_RETRY)
