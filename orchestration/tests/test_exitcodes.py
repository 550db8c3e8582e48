"""The orchestration's copy of the exit codes matches the project's enum, read from the project's env."""

from __future__ import annotations

import json
import subprocess

from conftest import CHECKOUT, PROJECT_PYTHON
from mlops_orchestration.exitcodes import EXIT_CODES, OUTCOMES, outcome_of

DUMP = ("import json; from mlops_template.core.exitcodes import ExitCode; "
        "print(json.dumps({c.name: int(c) for c in ExitCode}))")


def test_the_numbers_are_the_projects():
    proc = subprocess.run([str(PROJECT_PYTHON), "-c", DUMP], cwd=CHECKOUT, capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(proc.stdout) == EXIT_CODES


def test_every_code_has_an_outcome_and_the_documented_kind():
    assert set(OUTCOMES) == set(EXIT_CODES.values())
    kinds = {name: OUTCOMES[code].kind for name, code in EXIT_CODES.items()}
    assert kinds == {"OK": "success", "FAILED": "failure", "QUARANTINED": "failure", "NOT_BLESSED": "notice",
                     "WAIT": "notice", "ROLLED_BACK": "notice", "ALERT": "notice", "USAGE": "failure",
                     "BAD_INPUT": "failure", "UNAVAILABLE": "retry", "LOCKED": "retry"}
    assert outcome_of(-9).kind == "failure" and outcome_of(-9).alert  # killed by a signal


def test_a_missing_project_environment_fails_at_once_without_retry(monkeypatch, tmp_path):
    from dagster import DagsterEventType

    from mlops_orchestration.jobs import drift_job

    monkeypatch.setenv("MLOPS_TEMPLATE_PYTHON", str(tmp_path / "no-venv/bin/python"))
    result = drift_job.execute_in_process(raise_on_error=False)
    assert not result.success
    kinds = [e.event_type for e in result.all_events]
    assert DagsterEventType.STEP_UP_FOR_RETRY not in kinds
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "no-venv/bin/python does not exist: run `make setup`" in str(failure.event_specific_data.error), failure
