"""Servers started by tests never inherit the developer's credentials or team settings.

A developer's shell may hold real ``AWS_*`` keys, an ``MLFLOW_TRACKING_URI`` with its password,
``ROUTING_*``, ``INFERENCE_LOG_URL`` or ``API_KEYS_FILE``: a test server that inherited them
would read or write the real store or registry (or run closed when the test expects it open).
Every starter in ``tests/support`` builds its environment with ``servers.clean_env``; these tests
set the variables, start real processes through the starters, and read back what the child saw.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.clones import Clone

LEAKS = {
    "AWS_ACCESS_KEY_ID": "AKIA-developer",
    "AWS_SECRET_ACCESS_KEY": "developer-secret",
    "AWS_ENDPOINT_URL": "https://s3.company.example",
    "MLFLOW_TRACKING_URI": "https://mlflow.company.example",
    "MLFLOW_TRACKING_USERNAME": "developer",
    "MLFLOW_TRACKING_PASSWORD": "developer-password",
    "ROUTING_URL": "s3://company-bucket/serving/routing.json",
    "ROUTING_VERIFY_KEY_FILE": "/home/developer/verify.key",
    "INFERENCE_LOG_URL": "s3://company-bucket/inference-log",
    "API_KEYS_FILE": "/home/developer/keys.txt",
}
DUMP_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


@pytest.fixture
def leaky_shell(monkeypatch) -> None:
    for name, value in LEAKS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FRONT_API_KEYS_FILE", "/home/developer/front-keys.txt")


def child_env(log: Path, process) -> dict[str, str]:
    assert process.wait(timeout=60) == 0, log.read_text()
    return json.loads(log.read_text().strip().splitlines()[-1])


def test_the_clean_environment_drops_every_credential_and_keeps_explicit_ones(leaky_shell) -> None:
    env = servers.clean_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "MLFLOW_TRACKING_URI": "http://127.0.0.1:8"})
    assert {k for k in LEAKS if k in env} == {"AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"}
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:8"
    assert env["PATH"] == os.environ["PATH"]  # the rest of the shell stays
    assert "FRONT_API_KEYS_FILE" not in servers.clean_env(drop=("FRONT_",))


def test_a_process_started_for_a_test_sees_none_of_them(leaky_shell, tmp_path) -> None:
    log = tmp_path / "child.log"
    process = servers.start_process([sys.executable, "-c", DUMP_ENV], log, env={"AWS_ACCESS_KEY_ID": "testing"})
    seen = child_env(log, process)
    assert not {k for k in LEAKS if k in seen} - {"AWS_ACCESS_KEY_ID"}, seen
    assert seen["AWS_ACCESS_KEY_ID"] == "testing"


def test_bentoml_serve_started_for_a_test_sees_none_of_them(leaky_shell, tmp_path, monkeypatch) -> None:
    # start_bento_server runs ``sys.executable -m bentoml serve ...``: an executable that prints
    # its environment instead shows exactly what bentoml serve would have been given
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n{DUMP_ENV}\n", encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(fake))
    log = tmp_path / "bento.log"
    process, _ = servers.start_bento_server("svc:latest", tmp_path, log, ROUTING_FILE=str(tmp_path / "r.json"))
    seen = child_env(log, process)
    assert not {k for k in LEAKS if k in seen}, seen
    assert seen["ROUTING_FILE"] == str(tmp_path / "r.json") and seen["BENTOML_HOME"] == str(tmp_path)


def test_a_clone_runs_its_commands_without_them(leaky_shell, tmp_path) -> None:
    env = Clone(tmp_path).env
    assert not {k for k in LEAKS if k in env}
