"""Two machines, one project: they share only git, the tracking server and the DVC remote.

Machine A runs the pipeline against a real ``mlflow server`` (PostgreSQL, artifacts in an
S3-protocol store) with a DVC remote in the same store, commits, ``dvc push``es and ``git
push``es. Machine B is a fresh clone elsewhere: it ``dvc pull``s, retrains on a batch that
arrived later, and its gate compares the candidate with A's champion, loaded from the registry
(A's folder is deleted first, so nothing can come from its disk). The settings are the README's
"Team mode" ones, as environment variables, and nothing else. The tracking server authenticates:
A runs as the ``pipeline`` user, B as the ``ci`` user (both writers made by
``scripts/mlflow_auth_setup.py``); B with a wrong password stops at once (exit code 69) with a
message and logs that name the user but never the password.

Then the shared parts are stopped for real, one at a time: with PostgreSQL down, B's next
retrain stops at once with exit code 69 and changes nothing (the new batch stays in
``data/incoming``); with the MLflow server down, so does a rollback; once each is started again,
the commands run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mlops_template.core.exitcodes import ExitCode
from tests.support import team
from tests.support.clones import Clone
from tests.support.retrain_helpers import last_json_line, split_raw

BUCKET = "team-store"
REMOTE = f"s3://{BUCKET}/dvc"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    with team.shared_stack(tmp_path_factory.mktemp("team-shared"), BUCKET) as urls:
        yield urls


def team_machine(path: Path, source: Path, shared: dict, user: str, mlflow_user: str) -> Clone:
    """A fresh clone with the team settings in its environment (the README's Team mode)."""
    clone = Clone.create(path, user, source)
    clone.env.update(AWS_ENDPOINT_URL=shared["endpoint"], **team.S3_CREDENTIALS,
                     **team.mlflow_env(shared["url"], mlflow_user, shared["users"][mlflow_user]))
    return clone


def test_a_second_machine_retrains_against_the_first_ones_champion(shared, tmp_path_factory, make_clone):
    base = tmp_path_factory.mktemp("two-machines")
    setup = make_clone("team-setup")  # the team's repository, with a batch held back for later
    later, last = split_raw(setup.path / "data/raw/adult.csv.gz", base / "later", share=0.1, parts=2)
    setup.dvc("remote", "add", "--default", "team", REMOTE)  # once, committed: the URL is no secret
    setup.git("add", "-A")
    setup.git("commit", "--quiet", "-m", "team mode: DVC remote; a batch arrives later")
    origin = base / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(setup.path), str(origin)], check=True, timeout=120)

    a = team_machine(base / "machine-a", origin, shared, "machine-a", "pipeline")
    started = time.monotonic()
    a.dvc("repro")
    champion = a.json("deployments/champion.json")["champion"]
    a.git("add", "-A")
    a.git("commit", "--quiet", "-m", "pipeline run on machine A")
    a.dvc("push")
    a.git("push", "--quiet", "origin", "HEAD")
    assert not (a.path / "mlruns").exists()
    shutil.rmtree(a.path)  # B can only get what A shared
    stored = team.objects(shared["endpoint"], BUCKET)
    assert any(k.startswith("dvc/") for k in stored) and any(k.startswith("mlflow/") for k in stored)

    b = team_machine(base / "machine-b", origin, shared, "machine-b", "ci")
    b.dvc("pull")
    assert b.dvc_status() == {}  # A's outputs, from the remote
    shutil.copy(later, b.path / "data/incoming" / later.name)
    proc = b.python("-m", "mlops_template", "retrain", "--commit")
    summary = last_json_line(proc.stdout)
    assert [a["batch"] for a in summary["accepted"]] == [later.name], summary
    gate = b.json("metrics/gate.json")
    assert gate["candidate"]["model_version"] == "2"
    assert gate["champion"]["model_version"] == champion["model_version"] == "1"
    assert gate["champion"]["mlflow_run_id"] == champion["mlflow_run_id"]  # A's run, from the registry
    assert any(c["kind"] == "change" and not c["skipped"] for c in gate["checks"])
    assert not (b.path / "mlruns").exists()
    print(f"\ntwo-machine round trip: {time.monotonic() - started:.0f} s; B's candidate "
          f"{json.dumps({k: summary[k] for k in ('status', 'roc_auc', 'champion_version')})}")

    parts = shared["parts"]
    deployed = b.json("deployments/champion.json")
    shutil.copy(last, b.path / "data/incoming" / last.name)
    wrong = "Not-The-Password-Of-Ci-42"
    b.env["MLFLOW_TRACKING_PASSWORD"] = wrong
    proc = b.python("-m", "mlops_template", "retrain", check=False)
    b.env["MLFLOW_TRACKING_PASSWORD"] = shared["users"]["ci"]
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stdout + proc.stderr
    assert "'ci'" in last_json_line(proc.stdout)["error"] and wrong not in proc.stdout + proc.stderr
    assert (b.path / "data/incoming" / last.name).exists() and b.json("deployments/champion.json") == deployed
    parts["postgres"].stop()
    stopped = time.monotonic()
    proc = b.python("-m", "mlops_template", "retrain", check=False)
    retrain_s = time.monotonic() - stopped
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stdout + proc.stderr
    assert "database" in last_json_line(proc.stdout)["error"]
    assert (b.path / "data/incoming" / last.name).exists() and not (b.path / "data/raw" / last.name).exists()
    assert b.json("deployments/champion.json") == deployed
    parts["postgres"].start()

    parts["mlflow"].stop()
    stopped = time.monotonic()
    proc = b.python("-m", "mlops_template", "rollback", check=False)
    rollback_s = time.monotonic() - stopped
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stdout + proc.stderr
    assert "does not answer" in proc.stderr and b.json("deployments/champion.json") == deployed
    parts["mlflow"].start()
    current = deployed["champion"]["model_version"]
    proc = b.python("-m", "mlops_template", "rollback", "--to", current)  # all back: it runs (nothing to do)
    assert last_json_line(proc.stdout)["status"] == "unchanged"
    print(f"shared part down: retrain refused in {retrain_s:.1f} s (PostgreSQL), rollback in {rollback_s:.1f} s "
          f"(MLflow server), exit code {ExitCode.UNAVAILABLE:d}, nothing changed")
