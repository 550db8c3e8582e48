"""The service's scoring hot path: the fitted pipeline replayed with numpy on validated records.

The sklearn pipeline on a pandas frame has a fixed cost per call that dwarfs the estimator's for
small batches (frame construction, dtype coercion, ColumnTransformer's
checks; ``python -m benchmarks.serving`` measures it). :func:`compile_scorer` reads the fitted
parameters of the preprocessing that :func:`mlops_template.pipeline.training.build_pipeline` builds
(imputation, standard scaling, one-hot encoding) and applies them with numpy, column by column,
then hands the matrix to the fitted estimator (for a HistGradientBoosting classifier, binary or
multiclass, or regressor, small batches walk all its trees at once with numpy instead of one call
per tree). What a scorer returns is the task's output (:meth:`ModelScorer.output`, see
:mod:`mlops_template.core.tasks.base`): the positive class's probability, every class's
probability in the contract's order, or the predicted value.

It is never trusted blindly: before returning a scorer, :func:`compile_scorer` scores a sample
generated from the contract (every allowed category, nulls, range bounds) both ways and returns
None unless the outputs agree to 1e-9 (and 1e-12 relative, for large predicted values). The
service then scores with the pipeline itself, so a pipeline this module does not recognise is
slower, never wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract, pandas_dtype
from mlops_template.core.expressions import evaluate
from mlops_template.core.features import FeatureSpec, build_features
from mlops_template.core.tasks import Task, task_of
from mlops_template.serving.tree_walk import boosted_tree_walk as _boosted_tree_walk

logger = logging.getLogger(__name__)

Row = dict[str, Any]
# A fitted step replayed on a 2-D block of columns.
BlockStep = Callable[[np.ndarray], np.ndarray]
AGREEMENT_TOLERANCE = 1e-9
AGREEMENT_RELATIVE = 1e-12  # a regression's values may be large: summation order moves their last digits
SAMPLE_ROWS = 256
# Batch sizes at which the numpy walk of all boosted trees is raced against the estimator's own
# predict_proba when a model loads; the walk serves batches up to the largest size it won.
WALK_TRIAL_SIZES = (1, 16, 32, 64, 128, 256)
WALK_TRIAL_REPEATS = 3


class UnsupportedPipeline(Exception):
    """The pipeline holds a step or setting the numpy scorer does not replay."""


def pipeline_features(spec: FeatureSpec, contract: Contract, rows: Sequence[Row]) -> pd.DataFrame:
    """The pipeline's input frame for records, built exactly as the offline stages build it."""
    used = set(spec.source_columns)  # columns the model does not use may be absent from requests
    dtypes = {c.name: pandas_dtype(c) for c in contract.input_columns if c.name in used}
    frame = pd.DataFrame.from_records(list(rows), columns=list(dtypes)).astype(dtypes)
    return build_features(frame, spec)


def pipeline_probabilities(pipeline: Any, spec: FeatureSpec, contract: Contract,
                           rows: Sequence[Row]) -> np.ndarray:
    """``predict_proba`` of the sklearn pipeline on records, exactly as the offline stages do."""
    return pipeline.predict_proba(pipeline_features(spec, contract, rows))


def pipeline_output(pipeline: Any, spec: FeatureSpec, contract: Contract, rows: Sequence[Row],
                    task: Task) -> np.ndarray:
    """The task's output of the sklearn pipeline on records (what evaluate scored, row for row)."""
    return task.predict(pipeline, pipeline_features(spec, contract, rows))


@dataclass(frozen=True)
class _Block:
    """One ColumnTransformer entry: its input columns and the steps replayed on them."""

    columns: tuple[str, ...]
    numeric: bool
    steps: tuple[BlockStep, ...]


class _Walked:
    """The estimator as :meth:`Task.predict` sees it, answering with the numpy tree walk."""

    def __init__(self, classes: Any, method: str, walk: Callable[[np.ndarray], np.ndarray]) -> None:
        self.classes_ = classes
        setattr(self, method, walk)


class NumpyScorer:
    """The task's output for validated records, computed with numpy from the fitted parameters."""

    def __init__(self, contract: Contract, spec: FeatureSpec, blocks: list[_Block],
                 estimator: Any, task: Task | None = None) -> None:
        """Use :func:`compile_scorer`, which checks the result against the pipeline."""
        self._numeric_inputs = [c.name for c in contract.input_columns if c.type != "str"]
        self._text_inputs = [c.name for c in contract.input_columns if c.type == "str"]
        self._derived = dict(spec.derived)
        self._blocks = blocks
        self._estimator = estimator
        self._task = task if task is not None else task_of(contract)
        # What the estimator answers with: probabilities for a classifier, values for a regressor.
        self._method = "predict_proba" if hasattr(estimator, "predict_proba") else "predict"
        self._tree_walk = _boosted_tree_walk(estimator)
        self.walk_max_rows = max(WALK_TRIAL_SIZES) if self._tree_walk is not None else 0

    def output(self, rows: Sequence[Row]) -> np.ndarray:
        """The task's output, one entry per record (records as validated dicts; absent = null)."""
        matrix = self.model_inputs(rows)
        model = self._estimator
        if self._tree_walk is not None and len(rows) <= self.walk_max_rows:
            model = _Walked(getattr(self._estimator, "classes_", None), self._method, self._tree_walk)
        return self._task.predict(model, matrix)

    def predict_proba(self, rows: Sequence[Row]) -> np.ndarray:
        """Class probabilities of a classifier, one row per record, in the estimator's class order."""
        matrix = self.model_inputs(rows)
        if self._tree_walk is not None and len(rows) <= self.walk_max_rows:
            return self._tree_walk(matrix)
        return self._estimator.predict_proba(matrix)

    def calibrate_tree_walk(self, matrix: np.ndarray) -> None:
        """Race the tree walk against the estimator on this model and machine; keep the winner's range.

        Where the walk wins depends on the model (trees, depth, features) and the CPU, so it is
        measured when the model loads instead of fixed: at each of :data:`WALK_TRIAL_SIZES`, the
        best of :data:`WALK_TRIAL_REPEATS` timings of each. Both paths give the same
        outputs, so a noisy measurement costs speed, never correctness.
        """
        if self._tree_walk is None:
            return
        won, figures = 0, ""
        for size in WALK_TRIAL_SIZES:
            block = np.resize(matrix, (size, matrix.shape[1]))  # the sample's rows, repeated
            walk = _best_time(self._tree_walk, block)
            own = _best_time(getattr(self._estimator, self._method), block)
            if walk > own:
                figures += f"; from {size} rows sklearn is faster ({own * 1e3:.2f} ms against {walk * 1e3:.2f} ms)"
                break
            won = size
        self.walk_max_rows = won
        logger.info("tree walk serves batches of up to %d rows%s", won, figures)

    def model_inputs(self, rows: Sequence[Row]) -> np.ndarray:
        """The matrix the estimator takes: every block's columns, transformed, side by side."""
        columns = self._columns(rows)
        parts = []
        for block in self._blocks:
            dtype = np.float64 if block.numeric else object
            values = np.empty((len(rows), len(block.columns)), dtype=dtype)
            for position, name in enumerate(block.columns):
                values[:, position] = columns[name]
            for step in block.steps:
                values = step(values)
            parts.append(values)
        return np.hstack(parts).astype(np.float64, copy=False)

    def _columns(self, rows: Sequence[Row]) -> dict[str, np.ndarray]:
        """Each input column as an array (numbers as float with NaN for null), plus derived ones."""
        columns: dict[str, np.ndarray] = {
            name: np.array([row.get(name) for row in rows], dtype=np.float64)
            for name in self._numeric_inputs
        }
        for name in self._text_inputs:
            columns[name] = np.array([row.get(name) for row in rows], dtype=object)
        numeric = {name: columns[name] for name in self._numeric_inputs}
        for name, expression in self._derived.items():  # the pipeline's own evaluator
            columns[name] = evaluate(expression, numeric, len(rows))
        return columns


def compile_scorer(pipeline: Any, spec: FeatureSpec, contract: Contract,
                   task: Task | None = None) -> NumpyScorer | None:
    """A :class:`NumpyScorer` equal to ``pipeline`` on a contract sample, else None (with why).

    ``task`` (default: the contract's) says what is compared: the task's output of each path.
    """
    task = task if task is not None else task_of(contract)
    try:
        scorer = NumpyScorer(contract, spec, _blocks(pipeline), pipeline.steps[-1][1], task)
        sample = contract_sample(contract)
        expected = pipeline_output(pipeline, spec, contract, sample, task)
        actual = scorer.output(sample)
    except UnsupportedPipeline as exc:
        logger.warning("numpy scorer not used, scoring with the sklearn pipeline: %s", exc)
        return None
    except Exception:
        logger.exception("numpy scorer failed its check, scoring with the sklearn pipeline")
        return None
    if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=AGREEMENT_RELATIVE,
                                                         atol=AGREEMENT_TOLERANCE):
        gap = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else None
        logger.warning("numpy scorer disagrees with the pipeline (max gap %s): scoring with the "
                       "sklearn pipeline", gap)
        return None
    scorer.calibrate_tree_walk(scorer.model_inputs(sample))
    return scorer


def _best_time(function: Callable[[np.ndarray], Any], matrix: np.ndarray) -> float:
    """The shortest of a few timed calls, in seconds."""
    best = float("inf")
    for _ in range(WALK_TRIAL_REPEATS):
        started = time.perf_counter()
        function(matrix)
        best = min(best, time.perf_counter() - started)
    return best


class ModelScorer:
    """Scores validated records with the numpy replay when it passed its check, else the pipeline.

    Should the replay ever fail on a batch, the pipeline scores that batch: a speed-up must
    never turn into errors for clients.
    """

    def __init__(self, pipeline: Any, spec: FeatureSpec, contract: Contract,
                 use_replay: bool = True, task: Task | None = None) -> None:
        """Compile the replay (unless ``use_replay`` is False) and keep the pipeline as fallback.

        ``task`` (default: the contract's) is what :meth:`output` answers for.
        """
        self.pipeline, self.spec, self.contract = pipeline, spec, contract
        self.task = task if task is not None else task_of(contract)
        self.replay = compile_scorer(pipeline, spec, contract, self.task) if use_replay else None

    def describe(self) -> str:
        """Which path scores, for the server log."""
        return "the numpy replay of its pipeline" if self.replay else "its sklearn pipeline"

    def output(self, rows: Sequence[Row]) -> np.ndarray:
        """The task's output for the records (binary: positive-class probability, (n,); multiclass:
        every class's probability in the contract's order, (n, K); regression: the value, (n,))."""
        if self.replay is not None:
            try:
                return self.replay.output(rows)
            except Exception:
                logger.exception("numpy replay failed on a batch of %d records: scored with the "
                                 "sklearn pipeline instead", len(rows))
        return pipeline_output(self.pipeline, self.spec, self.contract, rows, self.task)

    def predict_proba(self, rows: Sequence[Row]) -> np.ndarray:
        """Class probabilities of a classifier, one row per record."""
        if self.replay is not None:
            try:
                return self.replay.predict_proba(rows)
            except Exception:
                logger.exception("numpy replay failed on a batch of %d records: scored with the "
                                 "sklearn pipeline instead", len(rows))
        return pipeline_probabilities(self.pipeline, self.spec, self.contract, rows)


def contract_sample(contract: Contract, rows: int = SAMPLE_ROWS, seed: int = 0) -> list[Row]:
    """Records a client could send: every allowed category, range bounds, nulls where allowed."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for column in contract.input_columns:
        if column.type == "str":
            choices = list(column.allowed) if column.allowed else [f"value-{i}" for i in range(8)]
            values: list[Any] = [choices[i % len(choices)] for i in range(rows)]
        else:
            low = column.min if column.min is not None else -1e6
            high = column.max if column.max is not None else 1e6
            drawn = rng.uniform(low, high, rows)
            drawn[:2] = (low, high)
            if column.type == "int":
                drawn = np.clip(np.rint(drawn), np.ceil(low), np.floor(high)).astype(int)
            values = drawn.tolist()
        if column.nullable:
            values = [None if rng.random() < 0.1 else v for v in values]
        columns[column.name] = values
    return [{name: columns[name][i] for name in columns if columns[name][i] is not None}
            for i in range(rows)]


def _blocks(pipeline: Any) -> list[_Block]:
    """The replayable blocks of a ``Pipeline([ColumnTransformer, estimator])``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2 or not isinstance(
            pipeline.steps[0][1], ColumnTransformer):
        raise UnsupportedPipeline("expected Pipeline([ColumnTransformer, estimator])")
    if hasattr(pipeline.steps[-1][1], "feature_names_in_"):
        raise UnsupportedPipeline("the estimator was fitted on named (pandas) features")
    blocks = []
    for name, transformer, columns in pipeline.steps[0][1].transformers_:
        if transformer == "drop" or (isinstance(columns, list) and not columns):
            continue  # a branch over no columns (an all-numeric contract's categorical one) is never fitted
        if not isinstance(transformer, Pipeline) or not isinstance(columns, list):
            raise UnsupportedPipeline(f"transformer {name!r} is not a Pipeline over named columns")
        numeric = not any(type(step).__name__ == "OneHotEncoder" or _is_text_imputer(step)
                          for _, step in transformer.steps)
        blocks.append(_Block(tuple(columns), numeric,
                             tuple(_replay(step) for _, step in transformer.steps)))
    return blocks


def _is_text_imputer(step: Any) -> bool:
    return type(step).__name__ == "SimpleImputer" and step.statistics_.dtype == object


def _replay(step: Any) -> BlockStep:
    """A numpy function equal to ``step.transform`` for the fitted step."""
    kind = type(step).__name__
    if kind == "SimpleImputer":
        return _imputer(step)
    if kind == "StandardScaler":
        return _scaler(step)
    if kind == "OneHotEncoder":
        return _one_hot(step)
    raise UnsupportedPipeline(f"no numpy replay of {kind}")


def _imputer(step: Any) -> BlockStep:
    if step.add_indicator or not pd.isna(step.missing_values):
        raise UnsupportedPipeline("SimpleImputer with indicators or a non-NaN missing marker")
    fill = step.statistics_
    if fill.dtype != object:
        if np.isnan(fill).any():
            raise UnsupportedPipeline("SimpleImputer dropped an all-missing column")
        return lambda values: np.where(np.isnan(values), fill, values)

    def impute_text(values: np.ndarray) -> np.ndarray:
        return np.where(pd.isna(values), fill, values)
    return impute_text


def _scaler(step: Any) -> BlockStep:
    mean = step.mean_ if step.with_mean else 0.0
    scale = step.scale_ if step.with_std else 1.0
    return lambda values: (values - mean) / scale


def _one_hot(step: Any) -> BlockStep:
    """One-hot codes; infrequent categories (and unknown ones, if so fitted) share one column."""
    if step.drop is not None or getattr(step, "sparse_output", True) or \
            step.handle_unknown not in ("ignore", "infrequent_if_exist"):
        raise UnsupportedPipeline("OneHotEncoder needs sparse_output=False, drop=None and "
                                  "handle_unknown ignore or infrequent_if_exist")
    unknown_to_rare = step.handle_unknown == "infrequent_if_exist"
    infrequent = getattr(step, "infrequent_categories_", None) or [None] * len(step.categories_)
    layouts = []
    for categories, rare in zip(step.categories_, infrequent, strict=True):
        rare = np.array([] if rare is None else rare.tolist(), dtype=object)
        frequent = np.array([c for c in categories.tolist() if c not in set(rare.tolist())],
                            dtype=object)
        if len(frequent) == 0:
            raise UnsupportedPipeline("OneHotEncoder feature without frequent categories")
        layouts.append((frequent, np.argsort(frequent), rare))
    width = sum(len(frequent) + (len(rare) > 0) for frequent, _, rare in layouts)

    def encode(values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], width))
        rows = np.arange(values.shape[0])
        offset = 0
        for feature, (frequent, order, rare) in enumerate(layouts):
            column = values[:, feature]
            at = order[np.clip(np.searchsorted(frequent, column, sorter=order), 0,
                               len(frequent) - 1)]
            known = frequent[at] == column
            out[rows[known], offset + at[known]] = 1.0
            if len(rare):
                to_rare = ~known if unknown_to_rare else np.isin(column, rare)
                out[rows[to_rare], offset + len(frequent)] = 1.0
            offset += len(frequent) + (len(rare) > 0)
        return out
    return encode
