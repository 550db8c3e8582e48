"""featurize on the Dask engine: the same row-wise features and keyed split, one partition at a time.

Each worker reads one validated part, builds :func:`~mlops_template.core.features.build_features`'
derived columns, decides each row's side with :func:`~mlops_template.pipeline.splits.in_test_set`
(a keyed hash of the row alone, so a row lands on the side it would on one machine) and writes its
train and test parts. The drift reference is a uniform sample of the training rows: every row
draws a random key, each partition keeps its ``reference_rows`` smallest, and the client keeps the
smallest of those, so only that many rows per partition ever reach the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.io import write_frame
from mlops_template.pipeline.distributed import PART_NAME, dataset_parts, fresh_directory
from mlops_template.pipeline.splits import in_test_set

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

REFERENCE_KEY = "_reference_key"


@dataclass(frozen=True)
class SplitPlan:
    """What every partition needs to split its rows exactly as the single-process stage would."""

    spec: FeatureSpec
    inputs: tuple[str, ...]
    test_size: float
    seed: int
    salt: str
    reference_rows: int


def split_part(source: Path, index: int, plan: SplitPlan, train_dir: Path,
               test_dir: Path) -> tuple[int, int, pd.DataFrame]:
    """Featurize and split one part; write its train and test rows; return counts and reference candidates."""
    data = pd.read_parquet(source)
    features = build_features(data, plan.spec)
    data = data.join(features[list(plan.spec.derived)])
    in_test = in_test_set(data, plan.test_size, plan.seed, plan.salt, plan.inputs)
    train, test = data[~in_test].reset_index(drop=True), data[in_test].reset_index(drop=True)
    write_frame(train, train_dir / PART_NAME.format(index))
    write_frame(test, test_dir / PART_NAME.format(index))
    keys = np.random.default_rng([plan.seed, index]).random(len(train))
    candidates = train.assign(**{REFERENCE_KEY: keys}).nsmallest(plan.reference_rows, REFERENCE_KEY)
    return len(train), len(test), candidates


def featurize_partitioned(validated: Path, plan: SplitPlan, client: Client, train_dir: Path, test_dir: Path,
                          reference_path: Path) -> tuple[int, int, int]:
    """Write partitioned train and test sets and the reference sample; return the three row counts."""
    parts = dataset_parts(validated)
    train_dir, test_dir = train_dir.absolute(), test_dir.absolute()   # workers write there by path
    fresh_directory(train_dir)
    fresh_directory(test_dir)
    futures = [client.submit(split_part, part, index, plan, train_dir, test_dir, pure=False)
               for index, part in enumerate(parts)]
    results: Sequence[tuple[int, int, pd.DataFrame]] = client.gather(futures)
    candidates = pd.concat([frame for _, _, frame in results], ignore_index=True)
    reference = (candidates.nsmallest(plan.reference_rows, REFERENCE_KEY)
                 .drop(columns=REFERENCE_KEY).reset_index(drop=True))
    write_frame(reference, reference_path)
    train_rows, test_rows = sum(r[0] for r in results), sum(r[1] for r in results)
    logger.info("%d partitions: train %d rows, test %d rows, reference %d rows",
                len(parts), train_rows, test_rows, len(reference))
    return train_rows, test_rows, len(reference)
