"""The retrain workflow hands each secret only to the steps that need it.

Secrets set on the workflow or the job reach every step: ``make setup`` (which runs packages'
build code), ``make test`` and third-party actions would all see the MLflow password and the
object-store keys. This parses ``.github/workflows/retrain.yml`` and checks that no secret is set
above the step level or exported through ``$GITHUB_ENV``, and exactly which step sees which.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github/workflows/retrain.yml"
SECRET = re.compile(r"\$\{\{\s*secrets\.(\w+)\s*}}")
MLFLOW = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
STORE = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
EXPECTED = {
    "Team settings": MLFLOW | {"SPLIT_SALT"},
    "Fetch the pipeline outputs of the last run": STORE,
    "Retrain": MLFLOW | STORE | {"ROUTING_SIGNING_KEY", "SPLIT_SALT"},
    "Push": STORE,
}


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def secrets_in(value: object) -> set[str]:
    return set(SECRET.findall(yaml.safe_dump(value))) if value is not None else set()


def steps() -> list[dict]:
    return [step for job in load()["jobs"].values() for step in job["steps"]]


def test_no_secret_is_set_for_the_whole_workflow_or_job() -> None:
    workflow = load()
    assert not secrets_in(workflow.get("env"))
    for job in workflow["jobs"].values():
        assert not secrets_in({k: v for k, v in job.items() if k != "steps"}), "job-level secrets"


def test_each_step_sees_exactly_the_secrets_it_needs() -> None:
    seen = {}
    for step in steps():
        name = step.get("name") or step.get("uses")
        # a secret may appear only as a step's env value, never inline in a script or an action's input
        assert not secrets_in({k: v for k, v in step.items() if k != "env"}), name
        env = step.get("env") or {}
        for variable, value in env.items():
            found = SECRET.findall(str(value))
            assert found in ([], [variable]), f"{name}: {variable} set from {found}"
        if secrets_in(env):
            seen[name] = secrets_in(env)
    assert seen == EXPECTED
    assert not {s["name"] for s in steps() if "uses" in s and secrets_in(s)}  # actions see none
    assert "MLFLOW_TRACKING_PASSWORD" not in str(next(s for s in steps() if s.get("name") == "Tests"))


def test_no_step_exports_anything_to_later_steps() -> None:
    for step in steps():
        assert "GITHUB_ENV" not in str(step.get("run", "")), step.get("name")
