"""Training: the sklearn Pipeline built from params, and the model card that describes a fit.

Fitted transforms (imputation, encoding, scaling) live inside the Pipeline, so the one artifact
the service loads carries them; row-wise features stay in :mod:`mlops_template.core.features`.
The contract's task (:mod:`mlops_template.core.tasks`) turns the target into labels, names the
estimator behind ``train.estimator`` and scores the fit; training itself is the same for every task.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_template.core.artifacts import CARD_TYPES_KEY, model_types, save_model
from mlops_template.core.boosting import LightGBMModel, frequent_categories, lightgbm_preprocess
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.io import write_json
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.params import TrainSection
from mlops_template.core.tasks import TASKS, Task, task_of
from mlops_template.core.tasks.binary import BinaryTask

logger = logging.getLogger(__name__)

# Every train.estimator name some task knows (each task maps it to its own sklearn class).
ESTIMATORS: tuple[str, ...] = tuple(sorted(set().union(*(task.estimators for task in TASKS.values()))))
# The task of callers that name none (tests, scripts written before tasks): a binary classifier on 0/1 labels.
BINARY_ON_LABELS = BinaryTask("label", ("0", "1"), positive="1")


def build_pipeline(
    spec: FeatureSpec, estimator: str, hyperparameters: dict[str, Any], seed: int, task: Task | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> Pipeline:
    """Imputation, encoding and scaling fitted with the task's estimator, so they ship as one artifact.

    ``estimator`` is a ``train.estimator`` name; ``task`` (default: binary classification) says which
    sklearn class it means. Hyperparameters that class does not take are dropped with a warning.
    ``lightgbm`` gets its own preprocessing (:func:`~mlops_template.core.boosting.lightgbm_preprocess`)
    over ``categories`` when given: each categorical column's values, chosen from the training data
    (:func:`~mlops_template.core.boosting.frequent_categories`).
    """
    model = (task or BINARY_ON_LABELS).estimator(estimator, hyperparameters, seed)
    if isinstance(model, LightGBMModel):
        first = len(spec.numeric_columns)
        model.set_params(categorical_features=tuple(range(first, first + len(spec.categorical))))
        preprocess = lightgbm_preprocess(spec.numeric_columns, spec.categorical, categories)
        return Pipeline([("preprocess", preprocess), ("estimator", model)])
    numeric = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            (
                "encode",
                OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10,
                              sparse_output=False),
            ),
        ]
    )
    preprocess = ColumnTransformer(
        [("numeric", numeric, spec.numeric_columns), ("categorical", categorical, list(spec.categorical))],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", preprocess), ("estimator", model)])


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


def model_card(train: TrainSection, model_name: str, contract: Contract, spec: FeatureSpec, rows: int,
               data_sha256: str, target_summary: dict[str, Any], train_metrics: dict[str, Any],
               model_sha256: str, types: list[str] | None = None) -> dict[str, Any]:
    """What was trained, on what, from which revision: saved beside the model and logged.

    ``target_summary`` is the task's :meth:`~mlops_template.core.tasks.Task.target_summary` of the
    training labels (``training_data.target``; a binary card also keeps ``positive_share`` beside it);
    ``train_metrics`` keeps the task's headline metrics. ``types`` lists every type the saved skops
    file holds; loading checks the file against it (and against the fixed allow-list in
    :mod:`mlops_template.core.artifacts`).
    """
    task = task_of(contract)
    training_data: dict[str, Any] = {"rows": rows, "sha256": data_sha256}
    if contract.is_binary:
        training_data["positive_share"] = target_summary["positive_share"]
    training_data["target"] = target_summary
    card = {
        "model_name": model_name,
        "contract": contract.name,
        "task": task.name,
        "target": contract.target,
        "classes": list(contract.classes),
        "positive_class": contract.positive_class,
        "estimator": train.estimator,
        "hyperparameters": train.chosen_hyperparameters,
        "seed": train.seed,
        "features": spec.columns,
        "training_data": training_data,
        "train_metrics": {k: train_metrics[k] for k in task.headline_metrics},
        "git_revision": git_revision(),
        "sha256": model_sha256,
    }
    if types is not None:
        card[CARD_TYPES_KEY] = list(types)
    return card


@dataclass
class Candidate:
    """A fitted pipeline, saved with its spec and model card in the candidate folder."""

    pipeline: Pipeline
    input_example: pd.DataFrame
    card: dict[str, Any]


def train_candidate(cfg: TrainSection, model_name: str, contract: Contract, spec: FeatureSpec, train: pd.DataFrame,
                    data_sha256: str, out_dir: Path, spec_path: Path) -> Candidate:
    """Fit the configured pipeline on ``train`` and write model, checksum, spec and card to ``out_dir``.

    ``cfg`` is the ``train`` section; ``model_name`` (``deploy.model_name``) goes into the card.
    """
    task = task_of(contract)
    features = build_features(train, spec)
    labels = task.encode(train[contract.target])
    categories = frequent_categories({name: features[name].value_counts() for name in spec.categorical})
    pipeline = build_pipeline(spec, cfg.estimator, cfg.chosen_hyperparameters, cfg.seed, task, categories)
    logger.info("fitting %s (%s, %s) on %d rows x %d features", cfg.estimator,
                type(pipeline[-1]).__name__, task.name, *features.shape)
    pipeline.fit(features, labels)
    train_metrics = task.metrics(labels, task.predict(pipeline, features))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    digest = save_model(pipeline, out_dir / MODEL_FILE)
    shutil.copy(spec_path, out_dir / FEATURE_SPEC_FILE)
    card = model_card(cfg, model_name, contract, spec, len(train), data_sha256, task.target_summary(labels),
                      train_metrics, digest, model_types(out_dir / MODEL_FILE))
    write_json(out_dir / MODEL_CARD_FILE, card)
    return Candidate(pipeline, features.head(5), card)
