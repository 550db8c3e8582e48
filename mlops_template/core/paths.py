"""Every repository-relative path the project reads or writes, in one place.

Stages, commands and jobs run from the repository root (``dvc repro`` does), so these are
relative to it. Keys in ``params.yaml`` that name paths (``data.raw``, ``data.contract``,
``ingest.*``, ``monitoring.*``) stay there: a team changes those; these are the layout.
"""

from __future__ import annotations

from pathlib import Path

from mlops_template.core.package_files import FEATURE_SPEC_FILE, IMPORTANCE_FILE

PARAMS = Path("params.yaml")
CONTRACTS = Path("contracts")
RAW = Path("data/raw")
ARCHIVE = Path("data/archive")
VALIDATED = Path("data/validated/data.parquet")
QUARANTINE = Path("data/quarantine/rejected.csv")
FEATURES = Path("data/features")
TRAIN = FEATURES / "train.parquet"
TEST = FEATURES / "test.parquet"
REFERENCE = FEATURES / "reference.parquet"
FEATURE_SPEC = FEATURES / FEATURE_SPEC_FILE
CANDIDATE = Path("models/candidate")
SERVING = Path("models/serving")
CHAMPION_ARCHIVE = SERVING / "champion.bento"
CHALLENGER_ARCHIVE = SERVING / "challenger.bento"
METRICS = Path("metrics")
VALIDATION_METRICS = METRICS / "validation.json"
EVALUATION = METRICS / "evaluation.json"
SLICES = METRICS / "slices.json"
GATE = METRICS / "gate.json"
IMPORTANCE = METRICS / IMPORTANCE_FILE  # permutation importance per input column (evaluate; shipped by deploy)
PLOTS = METRICS / "plots"
INGEST_REPORTS = METRICS / "ingest"
DEPLOYMENTS = Path("deployments")
CHAMPION_RECORD = DEPLOYMENTS / "champion.json"
HISTORY = DEPLOYMENTS / "history.jsonl"
ROUTING = DEPLOYMENTS / "routing.json"
RETRAIN_LOCK = Path(".dvc/tmp/retrain.lock")
SERVING_REQUIREMENTS = Path("requirements-serve.txt")
