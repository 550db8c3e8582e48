"""What the monitors need to know about the served model: its package, what it leans on, its predictions.

- The **package** is the champion's BentoML model folder (``deployments/champion.json`` names its
  tag), or a folder given as ``monitoring.model_package`` (a package laid out as
  ``models/candidate``: ``model.skops`` with its checksum, ``feature_spec.json``, ``model_card.json``).
- The **importance** is the permutation importance of each input contract column that the evaluate
  stage writes to ``metrics/importance.json`` and the deploy stage ships in the package
  (``{"metric": ..., "columns": {column: importance}, "unused": [columns the model does not read]}``).
  The package's own copy wins: it describes the model that serves.
- The **reference predictions** are the package's model scored on the drift reference sample:
  what the model answered on the data it was trained from, the baseline the live answers are
  compared with (:mod:`mlops_template.monitoring.predictions`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_template.core import paths
from mlops_template.core.io import read_json
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_FILE

if TYPE_CHECKING:
    from mlops_template.core.tasks import Task

logger = logging.getLogger(__name__)

IMPORTANCE_FILE = "importance.json"  # as core/package_files.py names it in a package
IMPORTANCE_PATH = paths.METRICS / IMPORTANCE_FILE
CHAMPION = "champion"  # monitoring.model_package: the champion's package, found through its record


class ImportanceError(ValueError):
    """An importance file that is not ``{"columns": {column: number}, "unused": [column, ...]}``."""


@dataclass(frozen=True)
class Importance:
    """How much the model's score depends on each input column, and the columns it does not read."""

    columns: Mapping[str, float]
    unused: tuple[str, ...]
    metric: str | None
    source: str


def parse_importance(raw: Any, source: str) -> Importance:
    """An :class:`Importance` from the parsed JSON of ``source``; ImportanceError says what is wrong."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("columns"), Mapping):
        raise ImportanceError(f"{source}: expected an object with a 'columns' object, got {type(raw).__name__}")
    columns: dict[str, float] = {}
    for name, value in raw["columns"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ImportanceError(f"{source}: importance of {name!r} is not a finite number: {value!r}")
        columns[str(name)] = float(value)
    unused = raw.get("unused", [])
    if not isinstance(unused, list) or not all(isinstance(c, str) for c in unused):
        raise ImportanceError(f"{source}: 'unused' must be a list of column names, got {unused!r}")
    return Importance(columns, tuple(unused), raw.get("metric"), source)


def read_importance(path: Path) -> Importance:
    """The importance file at ``path`` (see :func:`parse_importance`)."""
    return parse_importance(read_json(path), str(path))


def champion_package(record: Path = paths.CHAMPION_RECORD) -> Path | None:
    """The folder of the champion's BentoML model, or None (never deployed, or not in this store)."""
    from mlops_template.ops.records import champion

    deployed = champion(record)
    if not deployed or not deployed.get("model_tag"):
        logger.info("no champion in %s: the model's package is not known", record)
        return None
    try:
        import bentoml

        return Path(bentoml.models.get(deployed["model_tag"]).path)
    except Exception as exc:  # noqa: BLE001 - any store failure means: not available here
        logger.warning("champion model %s is not in this BentoML store (%s): its package is not read",
                       deployed["model_tag"], exc)
        return None


def champion_version(record: Path = paths.CHAMPION_RECORD) -> str | None:
    """The model version serving as champion (what the inference log's ``model_version`` holds), or None."""
    from mlops_template.ops.records import champion

    deployed = champion(record)
    return str(deployed["model_version"]) if deployed and deployed.get("model_version") is not None else None


def model_package(setting: str) -> Path | None:
    """The package ``monitoring.model_package`` names: ``champion``, a folder, or "" for none."""
    if not setting:
        return None
    if setting == CHAMPION:
        return champion_package()
    folder = Path(setting)
    if not folder.is_dir():
        raise FileNotFoundError(f"monitoring.model_package {setting}: no such folder")
    return folder


def find_importance(package: Path | None, fallback: Path | None) -> Importance | None:
    """The package's importance, else ``fallback`` (``metrics/importance.json``), else None.

    A file that exists but is malformed raises ImportanceError: weighing drift by a broken file
    would hide drift, and saying nothing would hide the broken file.
    """
    for path in ([package / IMPORTANCE_FILE] if package else []) + ([fallback] if fallback else []):
        if path.is_file():
            return read_importance(path)
    return None


def reference_output(package: Path, reference: pd.DataFrame, task: Task) -> np.ndarray:
    """The package's model scored on ``reference``: its output as :meth:`Task.predict` gives it.

    The model is loaded as the service loads it (checksum and recorded types checked first).
    """
    from mlops_template.core.artifacts import load_model
    from mlops_template.core.features import FeatureSpec, build_features

    model = load_model(package / MODEL_FILE)
    spec = FeatureSpec.from_json(package / FEATURE_SPEC_FILE)
    return task.predict(model, build_features(reference, spec))
