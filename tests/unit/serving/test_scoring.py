"""The service's numpy scorer gives the sklearn pipeline's probabilities, or refuses to exist."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

from mlops_template.core.features import build_features
from mlops_template.pipeline.training import build_pipeline
from mlops_template.serving import scoring
from mlops_template.serving.scoring import (
    ModelScorer,
    compile_scorer,
    contract_sample,
    pipeline_probabilities,
)

TRAIN_ROWS = 4000
ESTIMATORS = {
    "logistic_regression": {"max_iter": 500},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 2},
    "hist_gradient_boosting": {"max_iter": 40},
}


def records_of(frame: pd.DataFrame, contract) -> list[dict]:
    """Records as the service validates them: JSON types, nulls left out."""
    inputs = [c.name for c in contract.input_columns]
    rows = json.loads(frame[inputs].to_json(orient="records"))
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def fitted(spec, contract, train: pd.DataFrame, estimator: str = "hist_gradient_boosting"):
    pipeline = build_pipeline(spec, estimator, ESTIMATORS[estimator], seed=0)
    target = (train[contract.target] == contract.positive_class).astype(int)
    return pipeline.fit(build_features(train, spec), target)


@pytest.fixture(scope="module", autouse=True)
def one_native_thread():
    """One OpenMP thread, as in the service (``limit_native_threads``): the load-time race between
    the tree walk and sklearn times tiny parallel regions, which crawl on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def train(split) -> pd.DataFrame:
    return split[0].iloc[:TRAIN_ROWS]


@pytest.fixture(scope="module")
def test_records(split, contract) -> list[dict]:
    return records_of(split[1], contract)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_numpy_scorer_equals_pipeline(estimator, spec, contract, train, test_records) -> None:
    """On every held-out record (nulls included) the two paths agree to 1e-9, in one batch or one by one."""
    pipeline = fitted(spec, contract, train, estimator)
    scorer = compile_scorer(pipeline, spec, contract)
    assert scorer is not None
    assert any(len(r) < len(contract.input_columns) for r in test_records), "no nulls tested"
    expected = pipeline_probabilities(pipeline, spec, contract, test_records)
    np.testing.assert_allclose(scorer.predict_proba(test_records), expected, rtol=0, atol=1e-9)
    for index in (0, 1, len(test_records) - 1):
        np.testing.assert_allclose(scorer.predict_proba([test_records[index]]),
                                   expected[index : index + 1], rtol=0, atol=1e-9)
    for walk_max_rows in (max(scoring.WALK_TRIAL_SIZES), 0):  # both paths, whatever the calibration chose
        scorer.walk_max_rows = walk_max_rows
        for start in range(0, 1000, 256):  # sizes a batch takes in service
            chunk = test_records[start : start + 256]
            np.testing.assert_allclose(scorer.predict_proba(chunk),
                                       expected[start : start + len(chunk)], rtol=0, atol=1e-9)
    assert (scorer._tree_walk is not None) == (estimator == "hist_gradient_boosting")


def test_the_tree_walk_serves_the_sizes_it_won_when_the_model_loaded(spec, contract, train, monkeypatch,
                                                                     caplog) -> None:
    """The cut-off between the walk and the estimator is measured per model: up to the last size won."""
    pipeline = fitted(spec, contract, train)
    scorer = compile_scorer(pipeline, spec, contract)
    assert scorer.walk_max_rows in (0, *scoring.WALK_TRIAL_SIZES)

    def race(function, matrix):  # the walk is slower from 64 rows on
        walking = function == scorer._tree_walk
        return (2.0 if walking else 1.0) if matrix.shape[0] >= 64 else (1.0 if walking else 2.0)

    monkeypatch.setattr(scoring, "_best_time", race)
    with caplog.at_level(logging.INFO, logger="mlops_template.serving.scoring"):
        scorer.calibrate_tree_walk(scorer.model_inputs(contract_sample(contract)))
    assert scorer.walk_max_rows == 32
    assert "from 64 rows sklearn is faster" in caplog.text
    calls = []
    monkeypatch.setattr(scorer, "_tree_walk", lambda matrix: calls.append(len(matrix)) or np.zeros((len(matrix), 2)))
    records = records_of(train.head(40), contract)
    scorer.predict_proba(records[:32])
    scorer.predict_proba(records[:33])
    assert calls == [32]


def test_contract_sample_covers_the_contract(contract) -> None:
    """Every allowed category, both range bounds and a null of each nullable column occur."""
    sample = contract_sample(contract)
    for column in contract.input_columns:
        values = [row.get(column.name) for row in sample]
        if column.allowed:
            assert set(column.allowed) <= set(values), column.name
        if column.min is not None:
            present = [v for v in values if v is not None]
            assert min(present) == column.min and max(present) == column.max, column.name
        assert (None in values) == column.nullable, column.name


def test_unknown_categories_follow_the_encoder(spec, contract, train) -> None:
    """Without an allowed list, unseen values go where OneHotEncoder puts them, for both settings."""
    open_contract = dataclasses.replace(contract, columns=tuple(
        dataclasses.replace(c, allowed=None) if c.type == "str" else c for c in contract.columns))
    rows = records_of(train.head(50), contract)
    for row in rows[::3]:
        row["native_country"] = "Atlantis"
        row["workclass"] = "Guild"
    for handle_unknown in ("infrequent_if_exist", "ignore"):
        pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, seed=0)
        encoder = pipeline.named_steps["preprocess"].transformers[1][1].named_steps["encode"]
        encoder.set_params(handle_unknown=handle_unknown)
        pipeline.fit(build_features(train, spec), train[contract.target])
        scorer = compile_scorer(pipeline, spec, open_contract)
        assert scorer is not None, handle_unknown
        np.testing.assert_allclose(
            scorer.predict_proba(rows), pipeline_probabilities(pipeline, spec, open_contract, rows),
            rtol=0, atol=1e-9)


def test_unknown_step_falls_back_to_the_pipeline(spec, contract, train, caplog) -> None:
    """A step the numpy replay does not know means no scorer, and a warning that says which."""
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, seed=0)
    numeric = pipeline.named_steps["preprocess"].transformers[0][1]
    numeric.steps[1] = ("scale", MinMaxScaler())
    pipeline.fit(build_features(train, spec), train[contract.target])
    with caplog.at_level(logging.WARNING, logger=scoring.__name__):
        assert compile_scorer(pipeline, spec, contract) is None
    assert "MinMaxScaler" in caplog.text


def test_a_replay_that_disagrees_is_refused(spec, contract, train, monkeypatch, caplog) -> None:
    """The agreement check fails for a replay that is off by a little: the service keeps sklearn."""
    pipeline = fitted(spec, contract, train, "logistic_regression")
    exact = scoring._scaler

    def slightly_off(step):
        replay = exact(step)
        return lambda values: replay(values) * 1.001

    monkeypatch.setattr(scoring, "_scaler", slightly_off)
    with caplog.at_level(logging.WARNING, logger=scoring.__name__):
        assert compile_scorer(pipeline, spec, contract) is None
    assert "disagrees" in caplog.text


def test_sparse_encoder_is_not_replayed(spec, contract, train) -> None:
    pipeline = build_pipeline(spec, "logistic_regression", {"max_iter": 500}, seed=0)
    categorical = pipeline.named_steps["preprocess"].transformers[1][1]
    categorical.steps[1] = ("encode", OneHotEncoder(handle_unknown="ignore"))
    pipeline.fit(build_features(train, spec), train[contract.target])
    assert compile_scorer(pipeline, spec, contract) is None


def test_model_scorer_falls_back_when_the_replay_fails(spec, contract, train, test_records,
                                                       caplog) -> None:
    """A batch the replay cannot score is scored by the pipeline, with the failure logged."""
    pipeline = fitted(spec, contract, train, "logistic_regression")
    scorer = ModelScorer(pipeline, spec, contract)
    assert scorer.replay is not None and "numpy" in scorer.describe()

    def broken(rows):
        raise FloatingPointError("replay broke")

    scorer.replay.predict_proba = broken
    with caplog.at_level(logging.ERROR, logger=scoring.__name__):
        proba = scorer.predict_proba(test_records[:5])
    np.testing.assert_allclose(
        proba, pipeline_probabilities(pipeline, spec, contract, test_records[:5]), rtol=0, atol=0)
    assert "scored with the sklearn pipeline instead" in caplog.text
    assert ModelScorer(pipeline, spec, contract, use_replay=False).replay is None
