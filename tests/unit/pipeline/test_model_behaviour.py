"""Behavioural tests of the default model: minimum quality, invariance, direction."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops_template.core.artifacts import ModelIntegrityError, load_model, save_model
from mlops_template.pipeline.training import build_pipeline
from tests.unit.conftest import predict


def test_minimum_quality_on_held_out_data(trained, spec):
    pipeline, test, labels = trained
    assert roc_auc_score(labels, predict(pipeline, test, spec)) >= 0.90


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_every_configured_estimator_learns(params, contract, spec, split, estimator):
    train, test = split
    hyper = dict(params["train"]["hyperparameters"][estimator])
    if estimator == "random_forest":
        hyper["n_estimators"] = 50  # enough to show it learns, quick on 2 cores
    pipeline = build_pipeline(spec, estimator, hyper, seed=0)
    from mlops_template.core.features import build_features

    pipeline.fit(build_features(train, spec), (train[contract.target] == contract.positive_class).astype(int))
    labels = (test[contract.target] == contract.positive_class).astype(int)
    assert roc_auc_score(labels, predict(pipeline, test, spec)) >= 0.88


def test_invariant_to_the_survey_weight(trained, spec):
    """fnlwgt is a sampling weight, not a trait of the person: it must not move a score."""
    pipeline, test, _ = trained
    rows = test.head(500).copy()
    shuffled = rows.copy()
    shuffled["fnlwgt"] = np.random.default_rng(0).permutation(rows["fnlwgt"].to_numpy())
    np.testing.assert_array_equal(predict(pipeline, rows, spec), predict(pipeline, shuffled, spec))


def test_invariant_to_row_order_and_batch_size(trained, spec):
    pipeline, test, _ = trained
    rows = test.head(300)
    batch = predict(pipeline, rows, spec)
    reversed_batch = predict(pipeline, rows.iloc[::-1], spec)[::-1]
    one_by_one = np.array([predict(pipeline, rows.iloc[[i]], spec)[0] for i in range(0, 300, 30)])
    np.testing.assert_allclose(batch, reversed_batch, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch[::30], one_by_one, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "column, low, high",
    [("education_num", 9, 14), ("capital_gain", 0, 15000), ("age", 22, 45)],
)
def test_direction_where_the_domain_says_so(trained, spec, column, low, high):
    """More schooling, a large capital gain, or mid-career age raise the odds of earning >50K."""
    pipeline, test, _ = trained
    rows = test.head(1000)
    p_low = predict(pipeline, rows.assign(**{column: low}), spec)
    p_high = predict(pipeline, rows.assign(**{column: high}), spec)
    assert p_high.mean() > p_low.mean() + 0.02
    assert (p_high >= p_low).mean() >= 0.8


def test_saved_model_round_trips_and_refuses_tampering(trained, spec, tmp_path):
    pipeline, test, _ = trained
    path = tmp_path / "model.skops"
    save_model(pipeline, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(predict(loaded, test.head(50), spec), predict(pipeline, test.head(50), spec))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model(path)
