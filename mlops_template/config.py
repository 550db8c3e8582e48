"""Parameters, paths and small I/O helpers shared by the stage scripts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


def setup_logging(level: int = logging.INFO) -> None:
    """One log format for every stage and command."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params.yaml; stages pick their own sections."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def project_root() -> Path:
    """The repository that owns shared state (MLflow store, BentoML home).

    ``dvc exp run --temp`` and ``--queue`` run stages in a throwaway copy under ``.dvc/tmp``
    but set ``DVC_ROOT`` to the parent repository, so state written there survives the run.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def git_revision() -> str:
    """The current commit, with ``-dirty`` when the work tree has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file, then rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_frame(frame, path: str | Path) -> None:
    """Write a DataFrame atomically, as parquet or CSV by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(path)
