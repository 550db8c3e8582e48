"""Team mode's tracking server authenticates: nobody moves the ``champion`` alias without a right.

The server is the real one the team tests start (``mlflow server --app-name basic-auth`` on
PostgreSQL, artifacts in moto's S3), set up by ``scripts/mlflow_auth_setup.py`` as the README
says: the bootstrap admin password rotated, a pipeline user (EDIT on the experiment, MANAGE on
the registered model) and a read-only user. Requests go to its REST API exactly as MLflow's
client sends them (HTTP basic auth from ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from mlops_template.ops.process import shared_services_down
from tests.support import team
from tests.support.servers import REPO, clean_env

BUCKET = "team-auth"
EXPERIMENT, MODEL = "auth-test", "auth-model"
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> dict:
    with team.shared_stack(tmp_path_factory.mktemp("team-auth"), BUCKET, EXPERIMENT, MODEL) as stack:
        yield stack


def call(server: dict, method: str, path: str, user: str | None = None, password: str | None = None,
         **kwargs) -> requests.Response:
    """One REST call, as ``user`` (with ``password``, default: the user's own), or anonymous."""
    auth = None if user is None else (user, password if password is not None else server["users"][user])
    return requests.request(method, f"{server['url']}{API}{path}", auth=auth, timeout=30, **kwargs)


def champion(server: dict) -> str:
    found = call(server, "GET", "/registered-models/alias", "reader", params={"name": MODEL, "alias": "champion"})
    assert found.status_code == 200, found.text
    return found.json()["model_version"]["version"]


@pytest.fixture(scope="module")
def registry(server) -> dict:
    """As the pipeline user: a run and two versions of the model, ``champion`` on version 1."""
    experiment = call(server, "GET", "/experiments/get-by-name", "pipeline",
                      params={"experiment_name": EXPERIMENT}).json()["experiment"]["experiment_id"]
    run = call(server, "POST", "/runs/create", "pipeline", json={"experiment_id": experiment})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    for _ in range(2):
        made = call(server, "POST", "/model-versions/create", "pipeline",
                    json={"name": MODEL, "source": f"s3://{BUCKET}/mlflow/model", "run_id": run_id})
        assert made.status_code == 200, made.text
    moved = call(server, "POST", "/registered-models/alias", "pipeline",
                 json={"name": MODEL, "alias": "champion", "version": "1"})
    assert moved.status_code == 200, moved.text
    return {"experiment": experiment, "run_id": run_id}


def test_the_admin_bootstrap_password_no_longer_works(server) -> None:
    assert set(server["users"]) == {team.ADMIN, *team.WRITERS, *team.READERS}
    assert call(server, "GET", "/users/get", team.ADMIN, params={"username": "reader"}).status_code == 200
    bootstrap = call(server, "GET", "/users/get", team.ADMIN, password=server["admin_bootstrap_password"],
                     params={"username": "reader"})
    assert bootstrap.status_code == 401


def test_without_credentials_nothing_is_read_and_no_alias_moves(server, registry) -> None:
    runs = call(server, "POST", "/runs/search", json={"experiment_ids": [registry["experiment"]]})
    run = call(server, "GET", "/runs/get", params={"run_id": registry["run_id"]})
    alias = call(server, "GET", "/registered-models/alias", params={"name": MODEL, "alias": "champion"})
    move = call(server, "POST", "/registered-models/alias", json={"name": MODEL, "alias": "champion", "version": "2"})
    drop = call(server, "DELETE", "/registered-models/alias", json={"name": MODEL, "alias": "champion"})
    wrong = call(server, "POST", "/registered-models/alias", "pipeline", password="wrong-password-123",
                 json={"name": MODEL, "alias": "champion", "version": "2"})
    assert [r.status_code for r in (runs, run, alias, move, drop, wrong)] == [401] * 6
    assert registry["run_id"] not in runs.text + run.text
    assert champion(server) == "1"


def test_a_read_only_user_reads_but_cannot_move_the_champion(server, registry) -> None:
    runs = call(server, "POST", "/runs/search", "reader", json={"experiment_ids": [registry["experiment"]]})
    assert runs.status_code == 200 and registry["run_id"] in runs.text
    move = call(server, "POST", "/registered-models/alias", "reader",
                json={"name": MODEL, "alias": "champion", "version": "2"})
    drop = call(server, "DELETE", "/registered-models/alias", "reader", json={"name": MODEL, "alias": "champion"})
    assert (move.status_code, drop.status_code) == (403, 403)
    assert champion(server) == "1"


def test_the_pipeline_user_moves_the_champion(server, registry) -> None:
    for version in ("2", "1"):
        moved = call(server, "POST", "/registered-models/alias", "ci",
                     json={"name": MODEL, "alias": "champion", "version": version})
        assert moved.status_code == 200, moved.text
        assert champion(server) == version


def test_the_preflight_authenticates_and_a_refusal_names_the_user_not_the_password(server, monkeypatch) -> None:
    monkeypatch.delenv("ROUTING_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["url"])
    config = {"tracking_uri": "sqlite:///unused.db", "experiment": "unused"}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pipeline")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server["users"]["pipeline"])
    assert shared_services_down(config) is None

    secret = "Wrong-Secret-Password-42"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    refused = shared_services_down(config)
    assert refused is not None and "'pipeline'" in refused and "401" in refused and secret not in refused

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    anonymous = shared_services_down(config)
    assert anonymous is not None and "none are set" in anonymous

    in_url = server["url"].replace("http://", f"http://pipeline:{secret}@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", in_url)
    refused = shared_services_down(config)
    assert refused is not None and "'pipeline'" in refused and secret not in refused


def set_up(server: dict, admin_password: str, *args: str) -> subprocess.CompletedProcess:
    """``scripts/mlflow_auth_setup.py ARGS`` as the admin, in a clean environment."""
    env = clean_env(team.mlflow_env(server["url"], team.ADMIN, admin_password))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "mlflow_auth_setup.py"), *args,
                           f"--experiment={EXPERIMENT}", f"--model={MODEL}"], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_set_up_runs_again_to_add_a_user_and_refuses_a_wrong_admin(server, registry) -> None:
    done = set_up(server, server["users"][team.ADMIN], "--writer=pipeline", "--reader=analyst")
    assert done.returncode == 0, done.stderr
    passwords = json.loads(done.stdout)["passwords"]
    assert list(passwords) == ["analyst"]  # the existing user keeps its password
    assert not [p for p in passwords.values() if p in done.stderr]
    server["users"]["analyst"] = passwords["analyst"]
    assert call(server, "GET", "/registered-models/alias", "pipeline",
                params={"name": MODEL, "alias": "champion"}).status_code == 200
    move = call(server, "POST", "/registered-models/alias", "analyst",
                json={"name": MODEL, "alias": "champion", "version": "2"})
    assert move.status_code == 403

    wrong = "Not-The-Admin-Password-7"
    refused = set_up(server, wrong, "--reader=nobody")
    assert refused.returncode == 3 and "'admin'" in refused.stderr
    assert wrong not in refused.stdout + refused.stderr
