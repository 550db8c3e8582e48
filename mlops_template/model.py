"""The model: an sklearn Pipeline built from params, saved with skops and a checksum."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_template.features import FeatureSpec

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}
# skops refuses any type outside these modules when it loads a model.
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class ModelIntegrityError(RuntimeError):
    """A model file is missing, altered, or holds types that are not trusted."""


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


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(model_path: str | Path) -> Path:
    """Where the checksum of ``model_path`` is kept."""
    return Path(f"{model_path}.sha256")


def save_model(pipeline: Pipeline, path: str | Path) -> str:
    """Write the pipeline with skops (no pickle) and its sha256 beside it; return the digest."""
    import skops.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    skops.io.dump(pipeline, tmp)
    tmp.replace(path)
    digest = sha256_of(path)
    checksum_path(path).write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def load_model(path: str | Path, expected_sha256: str | None = None) -> Pipeline:
    """Load a skops model after checking its checksum and that it holds only trusted types.

    The expected digest comes from the argument or, failing that, the ``.sha256`` file beside it.
    """
    import skops.io

    path = Path(path)
    if not path.exists():
        raise ModelIntegrityError(f"model file {path} does not exist")
    if expected_sha256 is None:
        sums = checksum_path(path)
        if not sums.exists():
            raise ModelIntegrityError(f"no checksum file {sums} for model {path}")
        expected_sha256 = sums.read_text(encoding="utf-8").split()[0]
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model {path} has sha256 {actual}, expected {expected_sha256}: refusing to load"
        )
    return skops.io.load(path, trusted=trusted_types(path))


def trusted_types(path: str | Path) -> list[str]:
    """The types skops must be told to trust to load ``path``: only sklearn/numpy/scipy ones.

    Some sklearn types (HistGradientBoosting's TreePredictor) are never trusted by default
    because a crafted file could make them read out of bounds; the checksum verified before
    loading is what rules that out here.
    """
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if foreign:
        raise ModelIntegrityError(f"model {path} holds types outside sklearn/numpy/scipy: {foreign}")
    return untrusted
