"""LightGBM trained by the workers from parts on disk is the model one process trains on the same rows.

A worker builds LightGBM's Dataset from its parts through ``lightgbm.Sequence``, one encoded part
in memory at a time; with one share (one part), training on a real ``LocalCluster`` worker must
give the one-process ``LightGBMModel.fit`` model exactly, for every task; with several parts
over two workers (LightGBM's network), a model as good.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_template.core.features import build_features
from mlops_template.core.io import write_frame
from mlops_template.pipeline.distributed import PART_NAME
from mlops_template.pipeline.distributed_lightgbm import Encoding, OnePart, sequences, train_across_workers
from mlops_template.pipeline.distributed_training import PipelineFeatures
from mlops_template.pipeline.training import build_pipeline
from tests.support.task_models import TaskData, adult_data, task_data

HYPERPARAMETERS = {"n_estimators": 40, "num_leaves": 15}


def write_parts(frame: pd.DataFrame, directory: Path, count: int) -> list[Path]:
    directory.mkdir()
    paths = []
    for index, rows in enumerate(np.array_split(np.arange(len(frame)), count)):
        paths.append(directory / PART_NAME.format(index))
        write_frame(frame.iloc[rows].reset_index(drop=True), paths[-1])
    return paths


def fitted(data: TaskData):
    """The one-process LightGBM pipeline on the train rows, and an Encoding of the same preprocessing."""
    pipeline = build_pipeline(data.spec, "lightgbm", HYPERPARAMETERS, 0, data.task)
    labels = data.task.encode(data.train[data.contract.target])
    pipeline.fit(build_features(data.train, data.spec), labels)
    classes = None if data.task.name == "regression" else np.unique(labels)
    encoding = Encoding(PipelineFeatures(pipeline[0], data.spec), data.contract.target, data.task.encode, classes)
    return pipeline, encoding


def outputs(pipeline, data: TaskData) -> np.ndarray:
    return np.asarray(data.task.predict(pipeline, build_features(data.test, data.spec)))


@pytest.mark.parametrize("name", ["adult", "wine", "diabetes"])
def test_one_share_on_a_worker_is_the_one_process_model(client, tmp_path: Path, name: str) -> None:
    data = adult_data(train_rows=3000, test_rows=300) if name == "adult" else task_data(name)
    single, encoding = fitted(data)
    parts = write_parts(data.train, tmp_path / "train.parquet", 1)

    text = train_across_workers(client, parts, encoding, single[-1])
    spread = build_pipeline(data.spec, "lightgbm", HYPERPARAMETERS, 0, data.task)
    spread.steps[0] = ("preprocess", single[0])
    spread[-1].adopt(text, encoding.classes, single[0].transform(build_features(data.train.head(100), data.spec)))

    np.testing.assert_allclose(outputs(spread, data), outputs(single, data), rtol=0, atol=1e-12)


def test_a_worker_holds_one_encoded_part_at_a_time_and_reads_each_at_most_twice(tmp_path: Path) -> None:
    data = adult_data(train_rows=3000, test_rows=10)
    single, encoding = fitted(data)
    parts = [str(p) for p in write_parts(data.train, tmp_path / "train.parquet", 6)]
    held = OnePart(encoding)
    labels = np.concatenate([encoding.labels(p) for p in parts])
    streamed = lightgbm.Dataset(sequences(parts, held), label=labels, params={"verbose": -1}).construct()
    whole = lightgbm.Dataset(encoding.features(data.train), label=labels, params={"verbose": -1}).construct()

    assert held.loads <= 2 * len(parts)   # the bin sample, then the batches: never the whole share at once
    assert held.matrix is not None and len(held.matrix) == len(pd.read_parquet(parts[-1]))
    assert streamed.num_data() == whole.num_data() == len(data.train)
    assert streamed.get_label().tolist() == whole.get_label().tolist()


def test_two_workers_train_together_as_well_as_one_process(client, tmp_path: Path) -> None:
    data = adult_data(train_rows=12000, test_rows=3000)
    single, encoding = fitted(data)
    parts = write_parts(data.train, tmp_path / "train.parquet", 6)

    text = train_across_workers(client, parts, encoding, single[-1])
    booster = lightgbm.Booster(model_str=text)
    labels = data.task.encode(data.test[data.contract.target])
    spread_auc = roc_auc_score(labels, booster.predict(encoding.features(data.test)))
    single_auc = roc_auc_score(labels, outputs(single, data))
    assert "num_machines=2" in text or "[num_machines: 2]" in text   # it did train on both workers
    assert abs(spread_auc - single_auc) < 0.01, (spread_auc, single_auc)
