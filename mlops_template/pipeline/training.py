"""Training: the sklearn Pipeline built from params, and the model card that describes a fit.

Fitted transforms (imputation, encoding, scaling) live inside the Pipeline, so the one artifact
the service loads carries them; row-wise features stay in :mod:`mlops_template.core.features`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_template.core.artifacts import CARD_TYPES_KEY, model_types, save_model
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.io import write_json
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.params import TrainSection
from mlops_template.pipeline.evaluation import score_metrics

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}


def build_pipeline(
    spec: FeatureSpec, estimator: str, hyperparameters: dict[str, Any], seed: int
) -> Pipeline:
    """Imputation, encoding and scaling fitted with the estimator, so they ship as one artifact."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"train.estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
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
    estimator_cls = ESTIMATORS[estimator]
    params = dict(hyperparameters)
    if "random_state" in estimator_cls().get_params():
        params.setdefault("random_state", seed)
    return Pipeline([("preprocess", preprocess), ("estimator", estimator_cls(**params))])


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
               data_sha256: str, positive_share: float, train_metrics: dict[str, Any],
               model_sha256: str, types: list[str] | None = None) -> dict[str, Any]:
    """What was trained, on what, from which revision: saved beside the model and logged.

    ``types`` lists every type the saved skops file holds; loading checks the file against it
    (and against the fixed allow-list in :mod:`mlops_template.core.artifacts`).
    """
    card = {
        "model_name": model_name,
        "contract": contract.name,
        "target": contract.target,
        "positive_class": contract.positive_class,
        "estimator": train.estimator,
        "hyperparameters": train.chosen_hyperparameters,
        "seed": train.seed,
        "features": spec.columns,
        "training_data": {"rows": rows, "sha256": data_sha256, "positive_share": round(positive_share, 6)},
        "train_metrics": {k: train_metrics[k] for k in ("roc_auc", "log_loss", "accuracy")},
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
    features = build_features(train, spec)
    labels = (train[contract.target] == contract.positive_class).astype(int)
    pipeline = build_pipeline(spec, cfg.estimator, cfg.chosen_hyperparameters, cfg.seed)
    logger.info("fitting %s on %d rows x %d features", cfg.estimator, *features.shape)
    pipeline.fit(features, labels)
    train_metrics = score_metrics(labels.to_numpy(), pipeline.predict_proba(features)[:, 1], 0.5)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    digest = save_model(pipeline, out_dir / MODEL_FILE)
    shutil.copy(spec_path, out_dir / FEATURE_SPEC_FILE)
    card = model_card(cfg, model_name, contract, spec, len(train), data_sha256, float(labels.mean()), train_metrics,
                      digest, model_types(out_dir / MODEL_FILE))
    write_json(out_dir / MODEL_CARD_FILE, card)
    return Candidate(pipeline, features.head(5), card)
