"""LightGBM's data-parallel training over parquet parts, each worker streaming its own share from disk.

``lightgbm.dask`` concatenates every partition a worker holds into one in-memory matrix (and
keeps the partitions too), so a worker's memory grows with its share of the rows. Here each worker
gets a list of part files instead, and builds its LightGBM ``Dataset`` from them as a
``lightgbm.Sequence``: LightGBM samples rows to find the bins, then pushes the rows batch by
batch, while the worker holds one encoded part at a time (:class:`OnePart`). What stays in memory
is LightGBM's binned data (about a byte per feature and row) and the labels, not the float matrix.

The workers then train together over LightGBM's own network, set up as ``lightgbm.dask`` sets it
up (a port reserved on each worker and released just before training, ``machines`` naming them
all, ``tree_learner: data``); every worker ends with the same booster, and the first one's text
comes back. The hyperparameters are the one-machine estimator's (:meth:`LightGBMModel.lightgbm_params`
under LightGBM's own names), so either engine trains the same kind of model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from distributed import Client

    from mlops_template.core.boosting import LightGBMModel

logger = logging.getLogger(__name__)

BATCH_ROWS = 65_536   # rows LightGBM reads from a part at a time while building its Dataset
NETWORK_TIMEOUT_MIN = 120


@dataclass(frozen=True)
class Encoding:
    """How a training part becomes LightGBM's input: features (the pipeline's preprocessing) and labels.

    ``features`` maps a part's rows to the float matrix; ``labels`` maps them to LightGBM's label
    values (class positions in ``classes`` for a classifier, the values for a regression).
    """

    features: Callable[[pd.DataFrame], np.ndarray]
    target: str
    encode_target: Callable[[pd.Series], np.ndarray]
    classes: np.ndarray | None

    def labels(self, part: str) -> np.ndarray:
        """One part's labels, read from its target column alone."""
        values = np.asarray(self.encode_target(pd.read_parquet(part, columns=[self.target])[self.target]))
        return values.astype(np.float64) if self.classes is None else np.searchsorted(self.classes, values)


class OnePart:
    """The encoded matrix of one part at a time, shared by a worker's sequences (the previous one is dropped)."""

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        self.path: str | None = None
        self.matrix: np.ndarray | None = None
        self.loads = 0

    def get(self, path: str) -> np.ndarray:
        """The encoded rows of ``path``, read and encoded unless they are the ones held."""
        if path != self.path or self.matrix is None:
            self.matrix = None   # let the previous part go before the next one is read
            self.matrix = np.ascontiguousarray(self.encoding.features(pd.read_parquet(path)), dtype=np.float64)
            self.path = path
            self.loads += 1
        return self.matrix


def sequences(paths: list[str], held: OnePart) -> list[Any]:
    """A ``lightgbm.Sequence`` per part: LightGBM reads rows (the bin sample, then batches) through ``held``."""
    import lightgbm

    class EncodedPart(lightgbm.Sequence):
        batch_size = BATCH_ROWS

        def __init__(self, path: str) -> None:
            self.path = path
            self.rows = pq.ParquetFile(path).metadata.num_rows

        def __len__(self) -> int:
            return self.rows

        def __getitem__(self, index: Any) -> np.ndarray:
            return held.get(self.path)[index]

    return [EncodedPart(path) for path in paths]


def _fit_share(paths: list[str], encoding: Encoding, params: dict[str, Any], categorical: list[int], rounds: int,
               network: dict[str, Any], reserved: Any, keep_model: bool) -> str | None:
    """On a worker: build the Dataset of its parts, train with the others; the model text if ``keep_model``."""
    import lightgbm

    held = OnePart(encoding)
    labels = np.concatenate([encoding.labels(path) for path in paths])
    dataset = lightgbm.Dataset(sequences(paths, held), label=labels, categorical_feature=categorical, params=params)
    if reserved is not None:
        reserved.release()   # the port LightGBM listens on from now
    booster = None
    try:
        booster = lightgbm.train({**params, **network}, dataset, num_boost_round=rounds)
        logger.info("worker trained on %d rows of %d parts (%d part reads)", len(labels), len(paths), held.loads)
        return booster.model_to_string() if keep_model else None
    finally:
        if booster is not None:
            booster.free_network()


def shares(parts: list[Path], workers: list[str]) -> dict[str, list[str]]:
    """Parts given to workers, balanced by rows (largest first, to the least loaded), each share in part order."""
    rows = {str(p): pq.ParquetFile(p).metadata.num_rows for p in parts}
    load = dict.fromkeys(workers, 0)
    given: dict[str, list[str]] = {w: [] for w in workers}
    for path in sorted(rows, key=lambda p: -rows[p]):
        if rows[path] == 0:
            continue
        worker = min(workers, key=lambda w: load[w])
        given[worker].append(path)
        load[worker] += rows[path]
    return {w: sorted(ps) for w, ps in given.items() if ps}


def native_params(model: LightGBMModel, classes: np.ndarray | None) -> tuple[dict[str, Any], int]:
    """The model's hyperparameters under LightGBM's own names, as its sklearn estimator passes them; and rounds."""
    given = model.lightgbm_params()
    params = {key: value for key, value in given.items() if key not in ("n_estimators", "n_jobs")}
    if classes is not None and len(classes) > 2:
        params.update(objective="multiclass", num_class=len(classes))
    else:
        params["objective"] = "regression" if classes is None else "binary"
    params["tree_learner"] = "data"
    return params, int(given["n_estimators"])


def train_across_workers(client: Client, parts: list[Path], encoding: Encoding, model: LightGBMModel) -> str:
    """LightGBM's model text, trained data-parallel by the workers of ``client`` on ``parts`` (see module doc)."""
    from lightgbm.dask import _assign_open_ports_to_workers  # how lightgbm.dask reserves ports (pinned version)

    given = shares(parts, list(client.scheduler_info()["workers"]))
    if not given:
        raise ValueError("no training rows in any part")
    reserved, ports = _assign_open_ports_to_workers(client=client, workers=list(given))
    machines = ",".join(f"{urlparse(worker).hostname}:{ports[worker]}" for worker in given)
    params, rounds = native_params(model, encoding.classes)
    cores = client.ncores()
    first = next(iter(given))
    categorical = list(model.categorical_features)
    futures = [client.submit(_fit_share, paths, encoding, {**params, "num_threads": cores[worker]}, categorical, rounds,
                             {"machines": machines, "local_listen_port": ports[worker], "num_machines": len(given),
                              "time_out": NETWORK_TIMEOUT_MIN},
                             reserved[worker], worker == first, workers=[worker], allow_other_workers=False,
                             pure=False)
               for worker, paths in given.items()]
    logger.info("LightGBM across %d workers: %s", len(given), {w: len(p) for w, p in given.items()})
    texts = client.gather(futures)
    return next(text for text in texts if text)
