"""Permutation importance of each input column of the contract: what the model leans on.

For each contract input column, its raw values are shuffled across the rows of (a sample of) the
test set, the features are built again from the shuffled rows (so a derived feature reading that
column moves with it) and the model is scored with the task's primary metric. The importance is
how much worse the model got: the score's drop for a higher-is-better metric (ROC AUC), its rise
for a lower-is-better one (log loss, RMSE), averaged over a few shuffles. A column the model does
not read (``featurize.drop``, or a role the features skip) moves nothing and is 0; it is also
listed under ``unused``, so monitoring reports it without counting it as drift of the model.

Written to ``metrics/importance.json`` by the evaluate stage and shipped in the model package;
monitoring weighs drifted columns by ``weights`` (the positive importances, summing to 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlops_template.core.tasks import Task
from mlops_template.core.tasks.base import rounded

logger = logging.getLogger(__name__)

MAX_ROWS = 2000
REPEATS = 3
BATCH_ROWS = 50_000  # rows per predict call (several shuffled copies at once)


class Rows(Protocol):
    """Rows importance samples from: a DataFrame, or a test set too big for one process."""

    columns: Any

    def __len__(self) -> int: ...

    def take(self, positions: Any, /) -> pd.DataFrame: ...


def _primary(task: Task, labels: np.ndarray, output: np.ndarray) -> float:
    value = task.metrics(labels, output).get(task.primary_metric)
    if value is None:
        raise ValueError(f"{task.primary_metric} is undefined on these rows (one class only?): "
                         "permutation importance cannot be scored")
    return float(value)


def permutation_importance(predict: Callable[[pd.DataFrame], np.ndarray], frame: Rows,
                           labels: np.ndarray, task: Task, columns: Sequence[str], used: Sequence[str],
                           max_rows: int = MAX_ROWS, repeats: int = REPEATS, seed: int = 0) -> dict[str, Any]:
    """Importance of each of ``columns`` (raw input columns of ``frame``) for ``predict`` on ``labels``.

    ``predict`` maps raw rows to the task's output (features are built inside it); ``used`` are the
    contract columns the model's features read (:attr:`FeatureSpec.source_columns`): the others are
    listed as ``unused``. At most ``max_rows`` rows (a seeded sample) and ``repeats`` shuffles each.
    """
    if len(frame) != len(labels) or len(frame) == 0:
        raise ValueError(f"frame ({len(frame)} rows) and labels ({len(labels)}) must be non-empty and aligned")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the frame: {missing}")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(frame), size=min(max_rows, len(frame)), replace=False))
    rows = frame.take(take).reset_index(drop=True)  # only the sample is read (see Rows)
    y = np.asarray(labels)[take]
    base = _primary(task, y, predict(rows))
    sign = 1.0 if task.primary_direction == "higher_is_better" else -1.0
    drops: dict[str, list[float]] = {c: [] for c in columns}
    jobs = [column for column in columns for _ in range(repeats)]
    per_call = max(1, BATCH_ROWS // len(rows))  # shuffled copies scored in one call: one predict's overhead
    for start in range(0, len(jobs), per_call):
        batch = jobs[start:start + per_call]
        copies = []
        for column in batch:
            shuffled = rows.copy()
            shuffled[column] = rows[column].iloc[rng.permutation(len(rows))].reset_index(drop=True)  # dtype kept
            copies.append(shuffled)
        output = predict(pd.concat(copies, ignore_index=True))
        for i, column in enumerate(batch):
            drops[column].append(sign * (base - _primary(task, y, output[i * len(rows):(i + 1) * len(rows)])))
    importance = {c: rounded(float(np.mean(d))) for c, d in drops.items()}
    ranked = dict(sorted(importance.items(), key=lambda item: -item[1]))
    positive = {c: max(v, 0.0) for c, v in ranked.items() if c in used}
    total = sum(positive.values())
    weights = {c: rounded(v / total) if total > 0 else rounded(1.0 / len(positive)) for c, v in positive.items()}
    unused = [c for c in columns if c not in used]
    logger.info("permutation importance (%s, %d rows x %d shuffles): top %s; unused %s", task.primary_metric,
                len(rows), repeats, list(ranked)[:3], unused)
    return {"metric": task.primary_metric, "direction": task.primary_direction, "rows": int(len(rows)),
            "repeats": repeats, "baseline_score": rounded(base), "columns": ranked, "weights": weights,
            "unused": unused}
