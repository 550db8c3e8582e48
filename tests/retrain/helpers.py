"""Helpers for the retraining tests: a throwaway clone of this repository and batch files."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from tests.pipeline.pipeline_helpers import BIN
from tests.pipeline.pipeline_helpers import Clone as PipelineClone

SOURCE = Path(__file__).resolve().parents[2]
TIMEOUT = 1200


class Clone(PipelineClone):
    """The pipeline tests' clone, plus what retraining needs: no CI, git or routing settings from
    outside, background commands, the deployment history and the MLflow store."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.env = {k: v for k, v in self.env.items()
                    if not k.startswith(("GIT_", "ROUTING_")) and k != "CI"}
        self.env.update(MLFLOW_ENABLE_TELEMETRY="false", USER="retrain-tests")

    @classmethod
    def create(cls, path: Path) -> Clone:
        """Clone the source repository and give it a local git identity."""
        subprocess.run(["git", "clone", "--quiet", str(SOURCE), str(path)], check=True, timeout=300)
        clone = cls(path)
        clone.git("config", "user.email", "retrain-tests@example.com")
        clone.git("config", "user.name", "Retrain Tests")
        return clone

    def run(self, *args: str, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return super().run(*args, check=check, timeout=timeout)

    def popen(self, log: Path, *args: str) -> subprocess.Popen:
        """Start ``args`` in the background with stdout and stderr going to ``log``."""
        with open(log, "w", encoding="utf-8") as out:
            return subprocess.Popen(list(args), cwd=self.path, env=self.env, text=True,
                                    stdout=out, stderr=subprocess.STDOUT)

    def python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, *args, check=check)

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check)

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
