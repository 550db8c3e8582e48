"""train on the Dask engine: LightGBM trained across the workers, saved as the one-machine model is.

LightGBM's Dask estimators (rather than XGBoost's) because LightGBM is also this project's
one-machine ``train.estimator: lightgbm``: the same library, hyperparameters and model text on
either engine, so a team moving to a cluster changes ``train.engine`` and nothing else, and its
model files stay LightGBM's own text (no pickle). Each worker trains on the partitions it holds;
LightGBM's own network protocol (a port per worker) merges the histograms.

What needs all rows is computed on the cluster and only small results come back: each
categorical column's value counts (to fix the categories before anything is encoded) and the
labels (8 bytes a row, for the target summary). The preprocessing is fitted on nothing but those
counts, so every partition is encoded identically. Training metrics in the card are computed on
a sample of at most :data:`TRAIN_METRIC_ROWS` rows.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_template.core.artifacts import model_types, save_model
from mlops_template.core.boosting import LightGBMModel, frequent_categories
from mlops_template.core.contract import Contract
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.io import write_json
from mlops_template.core.package_files import FEATURE_SPEC_FILE, MODEL_CARD_FILE, MODEL_FILE
from mlops_template.core.params import TrainSection
from mlops_template.core.tasks import task_of
from mlops_template.pipeline.training import Candidate, build_pipeline, model_card

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

TRAIN_METRIC_ROWS = 200_000


LABEL = "__label__"


def _encoded(part: pd.DataFrame, preprocess: Any, spec: FeatureSpec, columns: list[str], target: str,
             task: Any) -> pd.DataFrame:
    """One partition as the matrix LightGBM trains on (the pipeline's own preprocessing) and its labels."""
    matrix = pd.DataFrame(preprocess.transform(build_features(part, spec)), columns=columns, index=part.index)
    matrix[LABEL] = task.encode(part[target])
    return matrix


def train_distributed(cfg: TrainSection, model_name: str, contract: Contract, spec: FeatureSpec, train_dir: Path,
                      data_sha256: str, out_dir: Path, spec_path: Path, client: Client) -> Candidate:
    """Fit LightGBM over the partitioned training set on ``client``'s cluster; save as :func:`train_candidate` does."""
    import dask
    import dask.dataframe as dd
    import lightgbm

    task = task_of(contract)
    frame = dd.read_parquet(str(train_dir.absolute()))   # the workers read it, from their own working directory
    counts = dask.compute(*[frame[name].value_counts() for name in spec.categorical]) if spec.categorical else ()
    categories = frequent_categories(dict(zip(spec.categorical, counts, strict=True)))
    pipeline = build_pipeline(spec, "lightgbm", cfg.chosen_hyperparameters, cfg.seed, task, categories)
    preprocess, model = pipeline[0], pipeline[-1]
    assert isinstance(model, LightGBMModel)
    head = frame.head(1000, npartitions=1, compute=True)  # one partition read, not all
    if head.empty:  # a first partition with no training rows: look further
        head = frame.head(1000, npartitions=-1)
    preprocess.fit(build_features(head, spec))  # explicit categories: nothing is learnt from these rows
    columns = [*spec.numeric_columns, *spec.categorical]
    # Features and labels from one map_partitions: selected from separate reads, Dask may fuse the
    # narrow label read into fewer partitions than the matrix has, and LightGBM pairs them by partition.
    meta = pd.DataFrame({name: pd.Series(dtype="float64") for name in columns})
    meta[LABEL] = pd.Series(dtype="float64" if task.name == "regression" else "int64")
    encoded = frame.map_partitions(_encoded, preprocess, spec, columns, contract.target, task, meta=meta)
    matrix, labels = encoded[columns], encoded[LABEL]
    estimator_class = lightgbm.DaskLGBMRegressor if task.name == "regression" else lightgbm.DaskLGBMClassifier
    params = {**model.lightgbm_params(), "n_jobs": None}  # each worker uses its own threads
    logger.info("fitting LightGBM (%s) across %d workers on %d partitions x %d features",
                task.name, len(client.scheduler_info()["workers"]), frame.npartitions, len(columns))
    distributed_model = estimator_class(client=client, **params)
    distributed_model.fit(matrix, labels, categorical_feature=list(model.categorical_features))
    local = distributed_model.to_local()
    all_labels = labels.compute().to_numpy()
    sample = frame.sample(frac=min(1.0, TRAIN_METRIC_ROWS / max(len(all_labels), 1)), random_state=cfg.seed).compute()
    sample_features = build_features(sample, spec)
    model.adopt(local.booster_.model_to_string(), getattr(local, "classes_", None),
                preprocess.transform(sample_features.head(1000)))
    train_metrics = task.metrics(task.encode(sample[contract.target]), task.predict(pipeline, sample_features))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    digest = save_model(pipeline, out_dir / MODEL_FILE)
    shutil.copy(spec_path, out_dir / FEATURE_SPEC_FILE)
    card = model_card(cfg, model_name, contract, spec, len(all_labels), data_sha256,
                      task.target_summary(np.asarray(all_labels)), train_metrics, digest,
                      model_types(out_dir / MODEL_FILE))
    card["engine"] = {"name": "dask", "workers": len(client.scheduler_info()["workers"]),
                      "partitions": frame.npartitions, "train_metric_rows": len(sample)}
    write_json(out_dir / MODEL_CARD_FILE, card)
    return Candidate(pipeline, sample_features.head(5), card)
