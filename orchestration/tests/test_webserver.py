"""``dagster dev`` started for real on the clone: its GraphQL API lists the jobs and runs one to the end.

Runs after test_jobs.py (file order) on the same clone, where the canary has been settled: the
canary decide job launched here runs ``canary status`` and skips its decide step.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import ORCHESTRATION, Repo

STARTUP_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 180.0
JOBS = {"retrain_job", "drift_job", "quality_job", "canary_decide_job", "rollback_job"}


def free_port() -> int:
    """A TCP port nobody listens on right now (as tests/support/servers.free_port, which needs pandas)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """One GraphQL request; the ``data`` of a successful answer."""
    answer = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def dagster_dev(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dagster dev`` on a free port with a throwaway DAGSTER_HOME; its URL once it answers."""
    home = tmp_path_factory.mktemp("dagster-dev-home")
    shutil.copy(ORCHESTRATION / "dagster.yaml", home / "dagster.yaml")  # telemetry off, as make orchestrate
    port = free_port()
    log = home / "dagster-dev.log"
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLOPS_REPO": str(repo.path)}
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-f",
                                 str(ORCHESTRATION / "definitions.py"), "-h", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"dagster dev exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            try:
                if requests.get(f"{url}/server_info", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (f"dagster dev did not answer in {STARTUP_TIMEOUT_S} s:\n"
                                                 f"{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # dagster dev, its webserver, daemon and code server
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


REPOSITORIES = """{ repositoriesOrError { __typename ... on RepositoryConnection {
  nodes { name location { name } jobs { name } schedules { name cronSchedule } sensors { name } } } } }"""
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status tags { key value } } } }"""


def test_graphql_lists_the_jobs_and_runs_one(dagster_dev: str):
    found = graphql(dagster_dev, REPOSITORIES)["repositoriesOrError"]
    assert found["__typename"] == "RepositoryConnection", found
    (repository,) = found["nodes"]
    assert {j["name"] for j in repository["jobs"]} >= JOBS
    assert {s["name"]: s["cronSchedule"] for s in repository["schedules"]} == {
        "weekly_retrain": "17 3 * * 1", "hourly_drift": "7 * * * *", "daily_quality": "37 4 * * *"}
    assert {s["name"] for s in repository["sensors"]} == {"incoming_batches", "incoming_objects",
                                                          "canary_challenger_present"}

    selector = {"repositoryLocationName": repository["location"]["name"], "repositoryName": repository["name"],
                "jobName": "canary_decide_job"}
    launched = graphql(dagster_dev, LAUNCH, {"params": {"selector": selector, "runConfigData": {}}})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = graphql(dagster_dev, RUN, {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {RUN_TIMEOUT_S} s"
        time.sleep(1)
    assert run["status"] == "SUCCESS", run
    assert {t["key"]: t["value"] for t in run["tags"]}["mlops/command"] == "canary decide"
