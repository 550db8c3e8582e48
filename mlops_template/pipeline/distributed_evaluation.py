"""evaluate on the Dask engine: the test set's predictions are computed where its parts lie.

The single-process stage reads the whole test set into one process. Here each worker reads one
test part (``data/features/test.parquet/part-NNNNN.parquet``), runs the model on it and returns
only its output; the evaluate process reads the few columns the metrics and slices need (the
target and ``evaluate.slices``) and, for the permutation importance, fetches the sampled rows
from their parts. So it holds a handful of numbers per test row, not the rows, and everything
after the predictions (metrics, slices, plots, importance, the gate) is the single-process code
on the same figures, in the same row order.

The models travel to the workers through Dask itself (loaded and checked here first: the
candidate's sha256 against its card, the champion's against the deployment record).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mlops_template.pipeline.distributed import dataset_parts

if TYPE_CHECKING:
    from distributed import Client

    from mlops_template.pipeline.assessment import Predictor

logger = logging.getLogger(__name__)

INDEX_PREFIX = "__index_level_"


def _predict_part(part: Path, predictor: Predictor) -> np.ndarray:
    return np.asarray(predictor(pd.read_parquet(part)))


def _rows_of_part(part: Path, positions: np.ndarray) -> pd.DataFrame:
    return pd.read_parquet(part).take(positions)


class PartitionedTestSet:
    """A partitioned test set as :func:`~mlops_template.pipeline.assessment.judge` reads it.

    ``frame`` holds the ``columns_kept`` of every row, in part order (what
    ``pandas.read_parquet`` of the directory gives); :meth:`predict` runs a model on every part
    on the workers; :meth:`take` fetches rows by position (the importance sample).
    """

    def __init__(self, client: Client, path: Path, columns_kept: Sequence[str]) -> None:
        self.client = client
        self.parts = dataset_parts(path)
        self.counts = [pq.ParquetFile(part).metadata.num_rows for part in self.parts]
        self.columns = [name for name in pq.read_schema(self.parts[0]).names if not name.startswith(INDEX_PREFIX)]
        missing = [c for c in columns_kept if c not in self.columns]
        if missing:
            raise ValueError(f"columns not in the test set {path}: {missing}")
        kept = list(dict.fromkeys(columns_kept))
        self.frame = pd.concat([pd.read_parquet(part, columns=kept) for part in self.parts], ignore_index=True)
        logger.info("test set: %d rows in %d parts, scored on the workers", len(self), len(self.parts))

    def __len__(self) -> int:
        return sum(self.counts)

    def predict(self, predictor: Predictor) -> np.ndarray:
        """``predictor``'s output for every test row, in order, computed part by part on the workers."""
        shipped = self.client.scatter(predictor, broadcast=True, hash=False)
        futures = self.client.map(_predict_part, self.parts, predictor=shipped, pure=False)
        outputs: list[np.ndarray] = self.client.gather(futures)
        return np.concatenate(outputs)

    def take(self, positions: Any) -> pd.DataFrame:
        """The rows at ``positions`` (ascending or not; positions over the whole set), as ``DataFrame.take``."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions outside the {len(self)} test rows")
        ascending = np.argsort(positions, kind="stable")
        wanted = positions[ascending]
        starts = np.cumsum([0, *self.counts])
        owner = np.searchsorted(starts, wanted, side="right") - 1
        futures = [self.client.submit(_rows_of_part, self.parts[i], wanted[owner == i] - starts[i], pure=False)
                   for i in np.unique(owner)]
        found: list[pd.DataFrame] = self.client.gather(futures)
        if not found:
            return pd.DataFrame(columns=self.columns)
        rows = pd.concat(found, ignore_index=True)
        return rows.iloc[np.argsort(ascending)].reset_index(drop=True)  # back to the order asked
