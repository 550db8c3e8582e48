"""Parameters and logging: read ``params.yaml`` once, log in one format, find the project root."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mlops_template.core import paths
from mlops_template.core.params import read_mapping

PARAMS_FILE = paths.PARAMS


def setup_logging(level: int = logging.INFO) -> None:
    """One log format for every stage and command."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params.yaml as a plain mapping, unchecked (tests and benchmarks vary it).

    The package reads it typed and checked, once, with :func:`mlops_template.core.params.load`.
    """
    return read_mapping(path)


def project_root() -> Path:
    """The repository that owns shared state (MLflow store, BentoML home).

    ``dvc exp run --temp`` and ``--queue`` run stages in a throwaway copy under ``.dvc/tmp``
    but set ``DVC_ROOT`` to the parent repository, so state written there survives the run.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()

