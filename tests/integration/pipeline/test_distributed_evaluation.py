"""Evaluate on the Dask engine gives the single-process evaluation: same metrics, slices, plots, importance, gate.

Real models of every task (tests/support/fitted_tasks.py) are judged twice: on their test set as one
DataFrame, and on the same rows written as unequal parquet parts and scored on a real two-process
``LocalCluster`` (:class:`PartitionedTestSet`), with a champion scored the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.io import write_frame
from mlops_template.core.params import EvaluateSection
from mlops_template.pipeline.assessment import judge
from mlops_template.pipeline.distributed import PART_NAME
from mlops_template.pipeline.distributed_evaluation import PartitionedTestSet
from tests.support.fitted_tasks import TASK_NAMES, dataset, fit
from tests.unit.pipeline.test_task_evaluation import gate_for

CUTS = (0.1, 0.45, 0.5, 0.8)  # five parts of unequal sizes, one of them small


def write_parts(frame: pd.DataFrame, directory: Path) -> Path:
    """``frame`` as parquet parts, in row order, the way the Dask featurize stage writes a test set."""
    directory.mkdir()
    bounds = [0, *(int(c * len(frame)) for c in CUTS), len(frame)]
    for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        write_frame(frame.iloc[start:end].reset_index(drop=True), directory / PART_NAME.format(index))
    return directory


@pytest.mark.parametrize("task", TASK_NAMES)
def test_partitioned_evaluation_equals_the_single_process_one(client, tmp_path: Path, task: str) -> None:
    data = dataset(task)
    candidate, champion = fit(data, seed=0), fit(data, seed=0, train_share=0.5)
    cfg = EvaluateSection.parse({"slices": ["region"], "min_slice_rows": 10})
    target = data.contract.target
    info = {"model_version": "1", "mlflow_run_id": "run-0", "sha256": "x", "threshold": None}

    def champion_loader():
        return champion.predict, info

    single = judge(cfg, gate_for(data.task), data.contract, candidate.card, candidate.test, candidate.predict,
                   candidate.spec.source_columns, champion_loader)
    parts = PartitionedTestSet(client, write_parts(candidate.test, tmp_path / "test.parquet"), [target, "region"])
    partitioned = judge(cfg, gate_for(data.task), data.contract, candidate.card, parts, candidate.predict,
                        candidate.spec.source_columns, champion_loader)

    assert len(parts.parts) == 5 and len(parts) == len(candidate.test)
    assert list(parts.frame.columns) == [target, "region"]  # the only columns this process holds
    assert partitioned.metrics == single.metrics
    assert partitioned.slices == single.slices
    assert partitioned.plots == single.plots
    assert partitioned.importance == single.importance
    assert partitioned.gate == single.gate
    assert partitioned.gate["champion"]["metrics"] == single.gate["champion"]["metrics"] is not None


def test_rows_are_fetched_by_position_in_any_order(client, tmp_path: Path) -> None:
    frame = dataset("binary").frame
    parts = PartitionedTestSet(client, write_parts(frame, tmp_path / "test.parquet"), ["diagnosis"])
    positions = np.random.default_rng(3).choice(len(frame), size=200, replace=False)  # unsorted, every part
    pd.testing.assert_frame_equal(parts.take(positions), frame.take(positions).reset_index(drop=True))
    assert parts.take(np.array([], dtype=int)).empty
    with pytest.raises(IndexError):
        parts.take([len(frame)])


def test_a_test_set_without_a_slice_column_is_refused(client, tmp_path: Path) -> None:
    directory = write_parts(dataset("binary").frame, tmp_path / "test.parquet")
    with pytest.raises(ValueError, match="not in the test set"):
        PartitionedTestSet(client, directory, ["diagnosis", "country"])
