"""Team mode's intake from Dagster, against moto's S3 server (the project's ``moto_server``), for real.

The ``incoming_objects`` sensor runs ``incoming list`` in the project's environment each tick and
starts one retrain per new or changed batch object; the retrain job's ``retrain`` fetches the
object into the clone's ``data/incoming/`` before guarding it. Runs after test_jobs.py (file order)
on the same clone; the batch used here is too small for the guard, so it is quarantined without a
``dvc repro`` (exit 2), which keeps this file to seconds and the clone's champion as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dagster import DagsterEventType, DagsterInstance, RunRequest, SkipReason, build_sensor_context

from conftest import PROJECT_PYTHON, Repo, read_rows, write_rows
from mlops_orchestration.jobs import retrain_job
from mlops_orchestration.triggers import incoming_objects

BUCKET, PREFIX = "team-bucket", "incoming"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on loopback with an empty :data:`BUCKET`; its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(PROJECT_PYTHON.parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(endpoint, timeout=2).status_code < 500:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # public-read-write: this test writes and lists with plain unsigned HTTP (no boto3 in this env)
        requests.put(f"{endpoint}/{BUCKET}", headers={"x-amz-acl": "public-read-write"}, timeout=10).raise_for_status()
        yield endpoint
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def team(store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Team-mode settings for the sensor and the commands it runs (undone after the test)."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": store, "INCOMING_URL": f"s3://{BUCKET}/{PREFIX}"}.items():
        monkeypatch.setenv(name, value)
    return store


def put(endpoint: str, key: str, data: bytes) -> None:
    requests.put(f"{endpoint}/{BUCKET}/{key}", data=data, timeout=10).raise_for_status()


def keys(endpoint: str) -> list[str]:
    answer = requests.get(f"{endpoint}/{BUCKET}", params={"list-type": "2", "prefix": f"{PREFIX}/"}, timeout=10)
    answer.raise_for_status()
    return re.findall(r"<Key>([^<]*)</Key>", answer.text)


def tick(instance: DagsterInstance, cursor: str | None):
    """One evaluation of the sensor: (its RunRequest or SkipReason, the cursor it left)."""
    context = build_sensor_context(instance=instance, cursor=cursor)
    return incoming_objects(context), context.cursor


def test_the_sensor_starts_one_retrain_per_new_or_changed_object(repo: Repo, instance: DagsterInstance,
                                                                  team: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    header, rows = read_rows(repo.batches[1])
    first = write_rows(tmp_path / "a.csv.gz", header, rows[:50]).read_bytes()

    result, cursor = tick(instance, None)
    assert isinstance(result, SkipReason) and "no new batch object" in result.skip_message, result

    put(team, f"{PREFIX}/2026-12-04-a.csv.gz", first)
    request, cursor = tick(instance, cursor)
    assert isinstance(request, RunRequest) and request.tags["mlops/batches"] == "2026-12-04-a.csv.gz", request
    again, cursor = tick(instance, cursor)
    assert isinstance(again, SkipReason), "the same object must not start a second retrain"

    put(team, f"{PREFIX}/2026-12-04-b.csv.gz", first)
    put(team, f"{PREFIX}/nested/2026-12-04-c.csv.gz", first)  # not a batch: never starts a run
    second, cursor = tick(instance, cursor)
    assert isinstance(second, RunRequest) and second.tags["mlops/batches"] == "2026-12-04-b.csv.gz", second
    assert second.run_key != request.run_key

    put(team, f"{PREFIX}/2026-12-04-a.csv.gz", write_rows(tmp_path / "a2.csv.gz", header, rows[50:90]).read_bytes())
    changed, cursor = tick(instance, cursor)
    assert isinstance(changed, RunRequest) and changed.tags["mlops/batches"] == "2026-12-04-a.csv.gz", changed

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # the store is down
    down, after = tick(instance, cursor)
    assert isinstance(down, SkipReason) and "exited 69" in down.skip_message, down
    assert after == cursor  # what was seen is kept for when the store is back
    monkeypatch.setenv("AWS_ENDPOINT_URL", team)
    back, _ = tick(instance, after)
    assert isinstance(back, SkipReason), "nothing new appeared while the store was down"

    monkeypatch.delenv("INCOMING_URL")
    off, _ = tick(instance, None)
    assert isinstance(off, SkipReason) and "INCOMING_URL is not set" in off.skip_message, off
    requests.delete(f"{team}/{BUCKET}/{PREFIX}/nested/2026-12-04-c.csv.gz", timeout=10).raise_for_status()


def test_the_retrain_job_fetches_the_object_before_guarding_it(repo: Repo, instance: DagsterInstance, team: str):
    before = set(keys(team))
    assert before == {f"{PREFIX}/2026-12-04-a.csv.gz", f"{PREFIX}/2026-12-04-b.csv.gz"}, before

    result = retrain_job.execute_in_process(instance=instance, raise_on_error=False,
                                            run_config={"ops": {"retrain": {"config": {"commit": False}}}})

    assert not result.success  # both objects are under ingest.min_rows rows: quarantined, exit 2
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    found = {k: getattr(v, "value", v) for k, v in failure.event_specific_data.user_failure_data.metadata.items()}
    assert found["exit_code"] == 2 and found["outcome"] == "quarantined", found
    assert found["fetched_objects"] == "2026-12-04-a.csv.gz, 2026-12-04-b.csv.gz", found
    assert keys(team) == []  # fetched, so deleted from the bucket
    quarantined = repo.path / "data/quarantine/batches"
    assert {"2026-12-04-a.csv.gz", "2026-12-04-b.csv.gz"} <= {p.name for p in quarantined.iterdir()}
    assert not list((repo.path / "data/incoming").glob("2026-12-04-*")), "the guard moved them on"
