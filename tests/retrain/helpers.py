"""Helpers for the retraining tests: a throwaway clone of this repository and batch files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
SOURCE = Path(__file__).resolve().parents[2]
# Files of the continuous-training feature: copied from the work tree over the clone, so the
# tests exercise them even before they are committed (a no-op once they are).
TIMEOUT = 1200


class Clone:
    """A ``git clone`` of the repository under test with the venv first on PATH and its own stores."""

    def __init__(self, path: Path):
        self.path = path
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_", "DVC_", "BENTOML_", "GIT_", "ROUTING_"))}
        env.pop("CI", None)
        env.pop("VIRTUAL_ENV", None)
        env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", BENTOML_HOME=str(path / ".bentoml"),
                   BENTOML_DO_NOT_TRACK="true", DVC_NO_ANALYTICS="true", MLFLOW_ENABLE_TELEMETRY="false",
                   USER="retrain-tests", PYTHONDONTWRITEBYTECODE="1")
        self.env = env

    @classmethod
    def create(cls, path: Path) -> Clone:
        """Clone the source repository and give it a local git identity."""
        subprocess.run(["git", "clone", "--quiet", str(SOURCE), str(path)], check=True, timeout=300)
        clone = cls(path)
        clone.git("config", "user.email", "retrain-tests@example.com")
        clone.git("config", "user.name", "Retrain Tests")
        return clone

    def run(self, *args: str, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, (f"`{' '.join(args)}` exited {proc.returncode}\n--- stdout ---\n"
                                          f"{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}")
        return proc

    def popen(self, log: Path, *args: str) -> subprocess.Popen:
        """Start ``args`` in the background with stdout and stderr going to ``log``."""
        with open(log, "w", encoding="utf-8") as out:
            return subprocess.Popen(list(args), cwd=self.path, env=self.env, text=True,
                                    stdout=out, stderr=subprocess.STDOUT)

    def python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, *args, check=check)

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", *args, check=check, timeout=120)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text(encoding="utf-8"))

    def write_params(self, params: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    def json(self, relative: str):
        return json.loads((self.path / relative).read_text(encoding="utf-8"))

    def history(self) -> list[dict]:
        path = self.path / "deployments/history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def mlflow_client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=f"sqlite:///{self.path / 'mlflow.db'}")


def last_json_line(stdout: str) -> dict:
    """The machine-readable summary a command prints last."""
    return json.loads(stdout.strip().splitlines()[-1])


def split_raw(raw_gz: Path, out_dir: Path, share: float = 0.25, parts: int = 2) -> list[Path]:
    """Move the last ``share`` of the rows of ``raw_gz`` into ``parts`` gzip batch files in ``out_dir``.

    The header line is kept in every file; the rows left in ``raw_gz`` are the first ones.
    """
    with gzip.open(raw_gz, "rt", encoding="utf-8") as fh:
        header, *rows = fh.readlines()
    keep = len(rows) - int(len(rows) * share)
    rest = rows[keep:]
    size = -(-len(rest) // parts)
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(path: Path, lines: list[str]) -> Path:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(header)
            fh.writelines(lines)
        return path

    write(raw_gz, rows[:keep])
    return [write(out_dir / f"batch-{i + 1:02d}.csv.gz", rest[i * size:(i + 1) * size]) for i in range(parts)]
