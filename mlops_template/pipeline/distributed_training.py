"""train on the Dask engine: LightGBM trained across the workers, saved as the one-machine model is.

LightGBM's distributed training (rather than XGBoost's) because LightGBM is also this project's
one-machine ``train.estimator: lightgbm``: the same library, hyperparameters and model text on
either engine, so a team moving to a cluster changes ``train.engine`` and nothing else, and its
model files stay LightGBM's own text (no pickle). Each worker streams its share of the parts
into LightGBM's binned Dataset, and LightGBM's own network protocol (a port per worker) merges
the histograms (:mod:`mlops_template.pipeline.distributed_lightgbm`).

What needs all rows is computed on the cluster or read a column at a time, and only small results
come back: each categorical column's value counts (to fix the categories before anything is
encoded) and the labels (8 bytes a row, for the target summary). The preprocessing is fitted on
nothing but those counts, so every partition is encoded identically. Training metrics in the card are computed on
a sample of at most :data:`TRAIN_METRIC_ROWS` rows.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
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
from mlops_template.pipeline.distributed import dataset_parts
from mlops_template.pipeline.distributed_lightgbm import Encoding, train_across_workers
from mlops_template.pipeline.training import Candidate, build_pipeline, model_card

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

TRAIN_METRIC_ROWS = 200_000


@dataclass(frozen=True)
class PipelineFeatures:
    """A part's rows as the model's input matrix: the features, then the pipeline's own preprocessing."""

    preprocess: Any
    spec: FeatureSpec

    def __call__(self, part: pd.DataFrame) -> np.ndarray:
        """The matrix LightGBM trains on for these rows."""
        return np.asarray(self.preprocess.transform(build_features(part, self.spec)), dtype=np.float64)


def train_distributed(cfg: TrainSection, model_name: str, contract: Contract, spec: FeatureSpec, train_dir: Path,
                      data_sha256: str, out_dir: Path, spec_path: Path, client: Client) -> Candidate:
    """Fit LightGBM over the partitioned training set on ``client``'s cluster; save as :func:`train_candidate` does."""
    import dask
    import dask.dataframe as dd

    task = task_of(contract)
    parts = dataset_parts(train_dir)
    frame = dd.read_parquet([str(p) for p in parts])
    counts = dask.compute(*[frame[name].value_counts() for name in spec.categorical]) if spec.categorical else ()
    categories = frequent_categories(dict(zip(spec.categorical, counts, strict=True)))
    pipeline = build_pipeline(spec, "lightgbm", cfg.chosen_hyperparameters, cfg.seed, task, categories)
    preprocess, model = pipeline[0], pipeline[-1]
    assert isinstance(model, LightGBMModel)
    head = frame.head(1000, npartitions=1, compute=True)  # one partition read, not all
    if head.empty:  # a first partition with no training rows: look further
        head = frame.head(1000, npartitions=-1)
    preprocess.fit(build_features(head, spec))  # explicit categories: nothing is learnt from these rows
    all_labels = np.concatenate([np.asarray(task.encode(pd.read_parquet(p, columns=[contract.target])[contract.target]))
                                 for p in parts])
    classes = None if task.name == "regression" else np.unique(all_labels)
    encoding = Encoding(PipelineFeatures(preprocess, spec), contract.target, task.encode, classes)
    workers = len(client.scheduler_info()["workers"])
    logger.info("fitting LightGBM (%s) across %d workers on %d parts", task.name, workers, len(parts))
    model_text = train_across_workers(client, parts, encoding, model)
    sample = frame.sample(frac=min(1.0, TRAIN_METRIC_ROWS / max(len(all_labels), 1)), random_state=cfg.seed).compute()
    sample_features = build_features(sample, spec)
    model.adopt(model_text, classes, preprocess.transform(sample_features.head(1000)))
    train_metrics = task.metrics(task.encode(sample[contract.target]), task.predict(pipeline, sample_features))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    digest = save_model(pipeline, out_dir / MODEL_FILE)
    shutil.copy(spec_path, out_dir / FEATURE_SPEC_FILE)
    card = model_card(cfg, model_name, contract, spec, len(all_labels), data_sha256,
                      task.target_summary(all_labels), train_metrics, digest,
                      model_types(out_dir / MODEL_FILE))
    card["engine"] = {"name": "dask", "workers": workers, "partitions": len(parts), "train_metric_rows": len(sample)}
    write_json(out_dir / MODEL_CARD_FILE, card)
    return Candidate(pipeline, sample_features.head(5), card)
