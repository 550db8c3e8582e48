"""Fixtures for the orchestration tests: one fresh clone of the checkout under test, trained once.

These tests run with the orchestration environment's python (``.venv-orchestration``); the jobs
they run call the project's commands with the checkout's own ``.venv`` (``MLOPS_TEMPLATE_PYTHON``),
in a ``git clone`` of it (``MLOPS_REPO``), so the developer's workspace is never touched. The
settings are environment variables read when ``mlops_orchestration`` is imported, so they are set
here, before any test module imports it.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ORCHESTRATION = Path(__file__).resolve().parents[1]
CHECKOUT = ORCHESTRATION.parent
PROJECT_PYTHON = Path(os.environ.get("MLOPS_TEMPLATE_PYTHON") or CHECKOUT / ".venv/bin/python")
RETRY_DELAY_S = 3.0
TRAIN_ROWS, BATCH_ROWS = 8000, 1500  # a quarter of Adult: the jobs are under test, not the model

os.environ.update(ORCHESTRATION_RETRY_DELAY_S=str(RETRY_DELAY_S), ORCHESTRATION_MAX_RETRIES="3",
                  INCOMING_SETTLE_S="0", ORCHESTRATION_AUTOSTART="0", MLOPS_TEMPLATE_PYTHON=str(PROJECT_PYTHON))
# BENTOML_HOME too: `make test` exports the checkout's store, and the jobs must use each clone's own.
for name in ("BENTOML_HOME", "MLFLOW_TRACKING_URI", "ROUTING_URL", "INFERENCE_LOG_URL", "INCOMING_URL",
             "PUSHGATEWAY_URL", "ALERTMANAGER_URL", "ALERT_WEBHOOK_URL", "CANARY_PROMETHEUS_URL", "CANARY_METRICS_URL",
             "QUALITY_LABELS"):
    os.environ.pop(name, None)
sys.path.insert(0, str(ORCHESTRATION))


@dataclass
class Repo:
    """The clone the jobs run in, and the batches held back from its training data."""

    path: Path
    batches: list[Path]

    def project(self, *words: str, check: bool = True) -> subprocess.CompletedProcess:
        """``mlops-template WORDS`` in the clone with the project's interpreter (test set-up only)."""
        return self.run(str(PROJECT_PYTHON), "-m", "mlops_template", *words, check=check)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A command in the clone with the project's venv first on PATH."""
        env = {**os.environ, "PATH": f"{PROJECT_PYTHON.parent}{os.pathsep}{os.environ['PATH']}",
               "BENTOML_HOME": str(self.path / ".bentoml"), "BENTOML_DO_NOT_TRACK": "true",
               "MLFLOW_ENABLE_TELEMETRY": "false", "DVC_NO_ANALYTICS": "true"}
        proc = subprocess.run(list(argv), cwd=self.path, env=env, capture_output=True, text=True, timeout=900)
        if check:
            assert proc.returncode == 0, (f"{argv} exited {proc.returncode}\n"
                                          f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a gzip CSV batch."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A gzip CSV batch with ``header`` and ``rows``."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *rows])
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text.getvalue())
    return path


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """A clone of the checkout with champion v1 trained on the first :data:`TRAIN_ROWS` rows of Adult
    and two clean batches of the next rows held back, committed (as
    ``tests/support/retrain_helpers.baseline_clone`` does, on less data)."""
    if not PROJECT_PYTHON.exists():
        pytest.fail(f"the project's environment {PROJECT_PYTHON} is missing: run `make setup` first")
    base = tmp_path_factory.mktemp("orchestration")
    path = base / "repo"
    subprocess.run(["git", "clone", "--quiet", str(CHECKOUT), str(path)], check=True, timeout=300)
    clone = Repo(path, [])
    clone.run("git", "config", "user.email", "orchestration-tests@example.com")
    clone.run("git", "config", "user.name", "Orchestration Tests")
    raw = path / "data/raw/adult.csv.gz"
    header, rows = read_rows(raw)
    (base / "batches").mkdir()
    clone.batches = [write_rows(base / "batches" / f"batch-{i + 1:02d}.csv.gz", header,
                                rows[TRAIN_ROWS + i * BATCH_ROWS:TRAIN_ROWS + (i + 1) * BATCH_ROWS]) for i in range(2)]
    write_rows(raw, header, rows[:TRAIN_ROWS])
    clone.run("git", "add", "-A")
    clone.run("git", "commit", "--quiet", "-m", "test setup: hold back two batches")
    clone.run(str(PROJECT_PYTHON), "-m", "dvc", "repro")
    clone.run("git", "add", "-A")
    clone.run("git", "commit", "--quiet", "-m", "baseline")
    os.environ["MLOPS_REPO"] = str(path)
    return clone


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory):
    """A Dagster instance on disk (sqlite storage), so another thread can read a running job's events."""
    from dagster import DagsterInstance

    with DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster-home")),
                                    overrides={"telemetry": {"enabled": False}}) as temp:
        yield temp


def copy_batch(batch: Path, folder: Path) -> Path:
    """Drop ``batch`` into ``folder`` as a new incoming batch would arrive."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(batch, folder / batch.name))
