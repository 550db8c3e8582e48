"""A fresh ``git clone`` of this repository, run for real: the end-to-end tests' one clone class.

Every command runs in a subprocess with the venv first on PATH, the BentoML store and the MLflow
store inside the clone, and no outside tracking server, CI, git or routing settings, so tests
never touch the developer's workspace or each other's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.support.servers import clean_env

BIN = Path(sys.executable).parent
STAGES = ("validate", "featurize", "train", "evaluate", "deploy")
REPRO_TIMEOUT = 1200
SOURCE = Path(__file__).resolve().parents[2]


def _fail_on_constant(name: str):
    raise ValueError(f"non-finite JSON constant {name}")


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (which Python's json accepts by default)."""
    return json.loads(text, parse_constant=_fail_on_constant)


def running_stages(output: str) -> list[str]:
    """Stages a dvc command actually executed, in order ("Running stage 'X':")."""
    return re.findall(r"Running stage '([^']+)'", output)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Clone:
    """A throwaway clone of the repository under test, with helpers to run commands in it."""

    def __init__(self, path: Path, user: str = "pipeline-tests"):
        self.path = path
        env = {k: v for k, v in clean_env().items() if not k.startswith(("DVC_", "BENTOML_", "GIT_")) and k != "CI"}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            BENTOML_HOME=str(path / ".bentoml"),
            BENTOML_DO_NOT_TRACK="true",
            DVC_NO_ANALYTICS="true",
            MLFLOW_ENABLE_TELEMETRY="false",
            PYTHONDONTWRITEBYTECODE="1",
            USER=user,
        )
        env.pop("VIRTUAL_ENV", None)
        self.env = env

    @classmethod
    def create(cls, path: Path, user: str = "pipeline-tests", source: Path = SOURCE) -> Clone:
        """Clone ``source`` into ``path`` and give it a local git identity."""
        proc = subprocess.run(["git", "clone", "--quiet", str(source), str(path)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"git clone failed: {proc.stderr}"
        clone = cls(path, user)
        clone.git("config", "user.email", f"{user}@example.com")
        clone.git("config", "user.name", user.replace("-", " ").title())
        return clone

    def run(self, *args: str, check: bool = True, timeout: float = REPRO_TIMEOUT) -> subprocess.CompletedProcess:
        started = time.monotonic()
        proc = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        with open(self.path.parent / "commands.log", "a", encoding="utf-8") as log:
            command = " ".join([Path(args[0]).name, *args[1:]])
            log.write(f"{time.monotonic() - started:7.1f}s rc={proc.returncode} {command}\n")
        if check:
            assert proc.returncode == 0, (
                f"`{' '.join(args)}` exited with {proc.returncode} in {self.path}\n"
                f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
            )
        return proc

    def dvc(self, *args: str, check: bool = True, timeout: float = REPRO_TIMEOUT) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check, timeout=timeout)

    def python(self, *args: str, check: bool = True, timeout: float = REPRO_TIMEOUT) -> subprocess.CompletedProcess:
        return self.run(sys.executable, *args, check=check, timeout=timeout)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", *args, check=check, timeout=120)

    def popen(self, log: Path, *args: str) -> subprocess.Popen:
        """Start ``args`` in the background with stdout and stderr going to ``log``."""
        with open(log, "w", encoding="utf-8") as out:
            return subprocess.Popen(list(args), cwd=self.path, env=self.env, text=True,
                                    stdout=out, stderr=subprocess.STDOUT)

    # --- state ------------------------------------------------------------------------------

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text(encoding="utf-8"))

    def write_params(self, params: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    def history(self) -> list[dict]:
        path = self.path / "deployments/history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def mlflow_client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=f"sqlite:///{self.path / 'mlflow.db'}")

    def json(self, relative: str):
        return strict_json((self.path / relative).read_text(encoding="utf-8"))

    def raw_data_file(self) -> Path:
        """The raw CSV the pipeline reads: ``data.raw`` itself, or the first CSV in that folder."""
        raw = self.path / self.params()["data"]["raw"]
        if raw.is_dir():
            files = sorted(p for p in raw.iterdir() if p.name.endswith((".csv", ".csv.gz")))
            assert files, f"{raw} holds no CSV"
            return files[0]
        return raw

    def dvc_status(self) -> dict:
        return json.loads(self.dvc("status", "--json").stdout or "{}")

    def assert_up_to_date(self) -> None:
        status = self.dvc_status()
        assert status == {}, f"dvc status is not clean: {json.dumps(status, indent=1)}"

    def hashes(self, relatives) -> dict[str, str]:
        return {r: sha256(self.path / r) for r in relatives}

    @contextmanager
    def restoring(self, *relatives: str):
        """Put the files ``relatives`` back as they were and bring the pipeline up to date again.

        Outputs of inputs DVC has seen before come back from its run cache, so this is cheap.
        """
        saved = {r: (self.path / r).read_bytes() for r in relatives}
        try:
            yield
        finally:
            for relative, content in saved.items():
                (self.path / relative).write_bytes(content)
            self.dvc("repro")
        self.assert_up_to_date()


def source_repository(config: pytest.Config) -> Path:
    """The git repository these tests belong to (the pytest rootdir's work tree)."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=config.rootpath,
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(top)
