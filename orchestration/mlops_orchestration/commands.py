"""Run the project's own commands in the project's own environment, and read what they leave behind.

Nothing here imports the project: a job runs ``<python> -m mlops_template <command>`` as a plain
subprocess, in the repository, with the project's virtualenv first on ``PATH`` (so ``dvc`` stages
use it too), exactly as cron and CI do. A plain subprocess rather than Dagster Pipes' subprocess
client: the commands speak exit codes and a JSON last line, not the Pipes protocol, and the client
turns every non-zero exit into one exception, while the exit code is what decides the outcome here.

Settings (environment variables, read when a job runs):

- ``MLOPS_REPO``: the repository the commands run in (default: the checkout holding this folder).
- ``MLOPS_TEMPLATE_PYTHON``: the project's interpreter (default ``$MLOPS_REPO/.venv/bin/python``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ENV, PYTHON_ENV = "MLOPS_REPO", "MLOPS_TEMPLATE_PYTHON"
DEFAULT_REPO = Path(__file__).resolve().parents[2]
OUTPUT_TAIL = 40  # lines of a command's output kept in the run's metadata


def repo() -> Path:
    """The repository the commands run in: ``$MLOPS_REPO``, else this checkout."""
    return Path(os.environ.get(REPO_ENV) or DEFAULT_REPO).resolve()


def python() -> Path:
    """The project's interpreter: ``$MLOPS_TEMPLATE_PYTHON``, else the repository's ``.venv``."""
    return Path(os.environ.get(PYTHON_ENV) or repo() / ".venv/bin/python")


def command_env(root: Path, interpreter: Path) -> dict[str, str]:
    """The environment ``make`` gives the project's commands: its venv on PATH, stores in the repo."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # the orchestration env's, if active
    env["PATH"] = f"{interpreter.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("BENTOML_HOME", str(root / ".bentoml"))
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    env.setdefault("DVC_NO_ANALYTICS", "true")
    return env


class ProjectEnvMissing(RuntimeError):
    """The project's interpreter is not where the settings say: nothing can run until it is set up."""


@dataclass
class Completed:
    """A finished command: its words, exit code, output, duration and the JSON summary it printed."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        """The command as typed, for logs and metadata."""
        return shlex.join(self.argv)

    def tail(self, lines: int = OUTPUT_TAIL) -> str:
        """The last ``lines`` lines of standard error and standard output, for the run's metadata."""
        text = "\n".join(part.rstrip() for part in (self.stderr, self.stdout) if part.strip())
        return "\n".join(text.splitlines()[-lines:])


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object a command prints last (retrain, rollback, canary decide), else the whole output
    as one JSON object (``canary status`` prints the routing document indented), else empty."""
    lines = stdout.strip().splitlines()
    for candidate in ([lines[-1], stdout] if lines else []):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def run(*words: str, timeout: float | None = None) -> Completed:
    """Run ``mlops-template WORDS`` in the repository with the project's interpreter; never raises on exit codes.

    A missing interpreter is :class:`ProjectEnvMissing` naming it (the project's environment is not
    set up), not a traceback from inside subprocess.
    """
    root, interpreter = repo(), python()
    if not interpreter.exists():
        raise ProjectEnvMissing(f"the project's interpreter {interpreter} does not exist: run `make setup` "
                                f"in {root} or set {PYTHON_ENV}")
    argv = [str(interpreter), "-m", "mlops_template", *words]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=root, env=command_env(root, interpreter), capture_output=True,
                          text=True, timeout=timeout, check=False)
    return Completed(argv, proc.returncode, proc.stdout, proc.stderr, round(time.monotonic() - started, 2),
                     last_json(proc.stdout))


def read_json(relative: str) -> dict[str, Any] | None:
    """A JSON file of the repository (``metrics/gate.json``, ``deployments/champion.json``), or None."""
    path = repo() / relative
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def written_since(relative: str, since: float) -> bool:
    """Whether the repository file ``relative`` was written at or after the wall-clock time ``since``."""
    try:
        return (repo() / relative).stat().st_mtime >= since
    except OSError:
        return False
