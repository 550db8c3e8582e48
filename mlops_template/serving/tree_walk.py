"""All the trees of a HistGradientBoosting model walked at once with numpy, for small batches.

sklearn's own ``predict`` walks one tree at a time over the whole batch, a fixed cost per tree
that dominates for a handful of records; here every (record, tree) pair advances one level per
numpy step. :class:`mlops_template.serving.scoring.NumpyScorer` uses it for the batch sizes where it
won a race against the estimator when the model loaded, after the replay as a whole was checked
against the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

BOOSTED = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


def boosted_tree_walk(estimator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The estimator's own answer (``predict_proba`` of a classifier, ``predict`` of a regressor) for
    a HistGradientBoosting model, walking all its trees at once.

    Binary and regression models grow one tree per iteration, multiclass ones K (one per class):
    the leaves reached are summed per class onto the fitted baseline, and the model's own loss
    turns those raw scores into its answer (sigmoid, softmax, or the regression's inverse link).
    None for any other estimator, or one with categorical splits: its own method is used.
    """
    if type(estimator).__name__ not in BOOSTED or getattr(estimator, "_preprocessor", None) is not None:
        return None
    per_iteration = int(estimator.n_trees_per_iteration_)
    trees = [predictor.nodes for predictors in estimator._predictors for predictor in predictors]
    if not trees or len(trees) != per_iteration * len(estimator._predictors):
        return None
    nodes = np.concatenate(trees)
    if nodes["is_categorical"].any():
        return None
    roots = np.cumsum([0] + [len(tree) for tree in trees[:-1]])
    tree_start = np.repeat(roots, [len(tree) for tree in trees])
    is_leaf = nodes["is_leaf"].astype(bool)
    here = np.arange(len(nodes))
    left = np.where(is_leaf, here, nodes["left"].astype(np.int64) + tree_start)  # leaves stay
    right = np.where(is_leaf, here, nodes["right"].astype(np.int64) + tree_start)
    feature = nodes["feature_idx"].astype(np.int64)
    threshold = nodes["num_threshold"]
    missing_left = nodes["missing_go_to_left"].astype(bool)
    baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, per_iteration)
    loss = estimator._loss
    classifier = hasattr(estimator, "predict_proba")

    def answer(matrix: np.ndarray) -> np.ndarray:
        rows = matrix.shape[0]
        node = np.tile(roots, rows)
        row_start = np.repeat(np.arange(rows) * matrix.shape[1], len(roots))
        flat = matrix.ravel()
        walking = np.arange(node.size)
        while walking.size:
            at = node[walking]
            value = flat[row_start[walking] + feature[at]]
            go_left = np.where(np.isnan(value), missing_left[at], value <= threshold[at])
            node[walking] = np.where(go_left, left[at], right[at])
            walking = walking[~is_leaf[node[walking]]]
        # Leaves in (row, iteration, class) order: summed over the iterations, per class.
        raw = nodes["value"][node].reshape(rows, -1, per_iteration).sum(axis=1) + baseline
        if classifier:
            return loss.predict_proba(raw)
        return loss.link.inverse(raw.ravel())
    return answer
