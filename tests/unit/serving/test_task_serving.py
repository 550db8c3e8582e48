"""Serving for every task: the numpy replay, the answer models, the metrics and the log entries.

The models are fitted on sklearn's bundled public datasets (tests/support/task_models.py): wine
and digits (multiclass, 3 and 10 classes), diabetes (regression).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from mlops_template.core.features import build_features
from mlops_template.core.tasks import BinaryTask, MulticlassTask, RegressionTask
from mlops_template.serving import scoring
from mlops_template.serving.inference_log import inference_entries
from mlops_template.serving.metrics import ServiceMetrics, prediction_buckets
from mlops_template.serving.models import served_task
from mlops_template.serving.schema import Prediction, prediction_model
from mlops_template.serving.scoring import ModelScorer, compile_scorer, pipeline_output
from tests.support.task_models import task_data

ESTIMATORS = {"hist_gradient_boosting": {"max_iter": 30}, "linear": {}, "random_forest": {"n_estimators": 10}}


@pytest.fixture(scope="module", autouse=True)
def one_native_thread():
    """One OpenMP thread, as in the service (see test_scoring.py)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def datasets() -> dict:
    return {name: task_data(name) for name in ("wine", "digits", "diabetes")}


@pytest.mark.parametrize("name", ["wine", "digits", "diabetes"])
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_replay_equals_the_pipeline_for_every_task(name, estimator, datasets) -> None:
    """Held-out records (nulls included) get the pipeline's own output from the numpy replay, in one
    batch, one by one, and through both the tree walk and the estimator; HGB models walk their trees."""
    data = datasets[name]
    pipeline = data.fit(estimator, ESTIMATORS[estimator])
    scorer = compile_scorer(pipeline, data.spec, data.contract, data.task)
    assert scorer is not None
    records = data.records(data.test)
    assert any(len(r) < len(data.contract.input_columns) for r in records), "no nulls tested"
    expected = data.task.predict(pipeline, build_features(data.test, data.spec))
    assert expected.shape == ((len(records), len(data.task.classes)) if data.task.classes else (len(records),))
    np.testing.assert_allclose(pipeline_output(pipeline, data.spec, data.contract, records, data.task), expected,
                               rtol=0, atol=1e-12)
    for walk_max_rows in (max(scoring.WALK_TRIAL_SIZES), 0):
        scorer.walk_max_rows = walk_max_rows
        np.testing.assert_allclose(scorer.output(records), expected, rtol=1e-12, atol=1e-9)
        for index in (0, len(records) - 1):
            np.testing.assert_allclose(scorer.output([records[index]]), expected[index:index + 1],
                                       rtol=1e-12, atol=1e-9)
    assert (scorer._tree_walk is not None) == (estimator == "hist_gradient_boosting")


def test_multiclass_walk_sums_each_class_trees(datasets) -> None:
    """The digits model grows 10 trees per iteration; the walk's probabilities are sklearn's, summing to 1."""
    data = datasets["digits"]
    pipeline = data.fit()
    estimator = pipeline.steps[-1][1]
    assert estimator.n_trees_per_iteration_ == 10
    walk = scoring._boosted_tree_walk(estimator)
    matrix = scoring.NumpyScorer(data.contract, data.spec, scoring._blocks(pipeline), estimator,
                                 data.task).model_inputs(data.records(data.test))
    proba = walk(matrix)
    np.testing.assert_allclose(proba, estimator.predict_proba(matrix), rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_regression_walk_applies_the_loss_link(datasets) -> None:
    """A Poisson-loss regressor answers exp(raw): the walk uses the model's own inverse link."""
    data = datasets["diabetes"]
    pipeline = data.fit("hist_gradient_boosting", {"max_iter": 20, "loss": "poisson"})
    scorer = compile_scorer(pipeline, data.spec, data.contract, data.task)
    assert scorer is not None and scorer._tree_walk is not None
    records = data.records(data.test)
    np.testing.assert_allclose(scorer.output(records), pipeline_output(pipeline, data.spec, data.contract,
                                                                        records, data.task), rtol=1e-12, atol=1e-9)


def test_a_regression_replay_that_disagrees_is_refused(datasets, monkeypatch, caplog) -> None:
    """The load-time check compares the regression's predicted values: a replay off by 0.1% is refused."""
    data = datasets["diabetes"]
    pipeline = data.fit("linear", {})
    exact = scoring._scaler
    monkeypatch.setattr(scoring, "_scaler", lambda step: (lambda values: exact(step)(values) * 1.001))
    with caplog.at_level(logging.WARNING, logger=scoring.__name__):
        assert compile_scorer(pipeline, data.spec, data.contract, data.task) is None
    assert "disagrees" in caplog.text


def test_model_scorer_output_falls_back_to_the_pipeline(datasets, caplog) -> None:
    """A batch the replay fails on is scored by the pipeline: the multiclass answer is unchanged."""
    data = datasets["wine"]
    pipeline = data.fit()
    scorer = ModelScorer(pipeline, data.spec, data.contract, task=data.task)
    assert scorer.replay is not None
    records = data.records(data.test)[:5]

    def broken(rows):
        raise FloatingPointError("replay broke")

    scorer.replay.output = broken
    with caplog.at_level(logging.ERROR, logger=scoring.__name__):
        output = scorer.output(records)
    np.testing.assert_allclose(output, data.task.predict(pipeline, build_features(data.test.head(5), data.spec)),
                               rtol=0, atol=0)
    assert "scored with the sklearn pipeline instead" in caplog.text


def test_served_task_comes_from_serving_json(datasets) -> None:
    """serving.json names the task (none: binary, as packaged before tasks); one the contract
    does not declare is refused."""
    wine, diabetes = datasets["wine"], datasets["diabetes"]
    task = served_task({"task": "multiclass", "classes": list(wine.contract.classes)}, wine.contract)
    assert isinstance(task, MulticlassTask) and task.classes == ("class_0", "class_1", "class_2")
    valued = served_task({"task": "multiclass", "classes": list(wine.contract.classes),
                          "decision_values": [[1, 0, 0], [0, 1, 0], [0, 0, 10]]}, wine.contract)
    proba = np.array([[0.5, 0.3, 0.2]])
    assert task.answers(proba)[0]["label"] == "class_0" and valued.answers(proba)[0]["label"] == "class_2"
    assert isinstance(served_task({"task": "regression", "threshold": None}, diabetes.contract), RegressionTask)
    with pytest.raises(ValueError, match="contract's task is 'multiclass'"):
        served_task({"task": "regression"}, wine.contract)
    with pytest.raises(ValueError, match="not one of"):
        served_task({"task": "ranking"}, wine.contract)
    binary = dataclasses.replace(diabetes.contract, task="binary", positive_class="yes", classes=("no", "yes"))
    task = served_task({"threshold": 0.4, "positive_class": "yes", "negative_class": "no"}, binary)
    assert isinstance(task, BinaryTask) and task.answers(np.array([0.3, 0.5]), 0.4) == [
        {"probability": 0.3, "label": "no"}, {"probability": 0.5, "label": "yes"}]


def test_answer_models_per_task(datasets) -> None:
    """Binary keeps Prediction; multiclass names a class and every class's probability; regression a number."""
    wine, diabetes = datasets["wine"], datasets["diabetes"]
    binary = BinaryTask("y", ("no", "yes"), "yes")
    assert prediction_model(binary) is Prediction
    multiclass = prediction_model(wine.task)
    answer = wine.task.answers(np.array([[0.2, 0.7, 0.1]]))[0]
    body = multiclass(**answer, model_version="3").model_dump()
    assert body == {"label": "class_1", "probabilities": {"class_0": 0.2, "class_1": 0.7, "class_2": 0.1},
                    "model_version": "3"}
    with pytest.raises(ValidationError):
        multiclass(label="class_9", probabilities={"class_0": 1.0}, model_version="3")
    with pytest.raises(ValidationError):
        multiclass(label="class_0", probabilities={"class_9": 1.0}, model_version="3")
    schema = multiclass.model_json_schema()
    assert schema["properties"]["label"]["enum"] == ["class_0", "class_1", "class_2"]
    assert set(schema["required"]) == {"label", "probabilities", "model_version"}
    regression = prediction_model(diabetes.task)
    assert regression(**diabetes.task.answers(np.array([151.5]))[0], model_version="3").model_dump() == {
        "prediction": 151.5, "model_version": "3"}
    assert set(regression.model_json_schema()["required"]) == {"prediction", "model_version"}
    assert regression.model_json_schema()["properties"]["prediction"]["type"] == "number"


def test_inference_log_entries_carry_the_task_answer(datasets) -> None:
    """Binary probability + label as before; multiclass label + probabilities; regression prediction."""
    wine, diabetes = datasets["wine"], datasets["diabetes"]
    rows = [{"a": 1}, {"a": 2}]
    binary = inference_entries("r", "7", rows, [{"probability": 0.3, "label": "no"}] * 2)
    assert list(binary[0]) == ["request_id", "record_index", "model_version", "features", "probability", "label"]
    multi = inference_entries("r", "7", rows, wine.task.answers(np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])))
    assert [e["label"] for e in multi] == ["class_1", "class_0"]
    assert multi[1]["probabilities"] == {"class_0": 0.6, "class_1": 0.3, "class_2": 0.1}
    values = inference_entries("r", "7", rows, diabetes.task.answers(np.array([80.0, 210.5])), "client-1")
    assert [(e["prediction"], e["client_request_id"], e["record_index"]) for e in values] == [
        (80.0, "client-1", 0), (210.5, "client-1", 1)]


@pytest.fixture
def fresh_registry():
    """Unregister the collectors a test's ServiceMetrics registered (the process has one registry)."""
    before = set(REGISTRY._collector_to_names)
    yield REGISTRY
    for collector in set(REGISTRY._collector_to_names) - before:
        REGISTRY.unregister(collector)


def test_regression_histogram_is_bucketed_at_the_target_quantiles(datasets, fresh_registry) -> None:
    data = datasets["diabetes"]
    summary = data.task.target_summary(data.task.encode(data.train[data.contract.target]))
    buckets = prediction_buckets(summary)
    assert buckets == tuple(sorted(set(summary["quantiles"].values())))
    metrics = ServiceMetrics("diabetes", "regression", (), buckets)
    metrics.serving([("3", "f" * 64, "champion")])
    assert fresh_registry.get_sample_value("model_prediction_count", {"model_version": "3"}) == 0
    output = data.fit().predict(build_features(data.test, data.spec))
    metrics.scored("3", 0.01, output, data.task.answers(output))
    for bound in buckets:
        assert fresh_registry.get_sample_value("model_prediction_bucket", {"model_version": "3", "le": str(bound)}) \
            == int((output <= bound).sum()), bound
    assert fresh_registry.get_sample_value("model_prediction_sum", {"model_version": "3"}) == pytest.approx(
        output.sum())
    assert fresh_registry.get_sample_value("model_predicted_probability_count", {"model_version": "3"}) is None
    assert fresh_registry.get_sample_value("model_records_total", {"outcome": "scored"}) == len(output)


def test_multiclass_counts_every_class(datasets, fresh_registry) -> None:
    data = datasets["wine"]
    metrics = ServiceMetrics("wine", "multiclass", data.task.classes)
    metrics.serving([("3", "f" * 64, "champion")])
    for label in data.task.classes:  # every class's series exists before any prediction
        assert fresh_registry.get_sample_value("model_predictions_by_class_total",
                                               {"model_version": "3", "label": label}) == 0
    output = data.task.predict(data.fit(), build_features(data.test, data.spec))
    metrics.scored("3", 0.01, output, data.task.answers(output))
    best = output.argmax(axis=1)
    for index, label in enumerate(data.task.classes):
        for name in ("model_predictions_by_class_total", "model_predicted_class_total"):
            assert fresh_registry.get_sample_value(name, {"model_version": "3", "label": label}) == \
                int((best == index).sum()), (name, label)
    assert fresh_registry.get_sample_value("model_prediction_count", {"model_version": "3"}) is None


def test_binary_metrics_are_as_before(fresh_registry) -> None:
    task = BinaryTask("y", ("no", "yes"), "yes")
    metrics = ServiceMetrics("m")
    metrics.serving([("3", "f" * 64, "champion")])
    output = np.array([0.05, 0.45, 0.95])
    metrics.scored("3", 0.01, output, task.answers(output, 0.4))
    assert fresh_registry.get_sample_value("model_predicted_class_total", {"model_version": "3", "label": "yes"}) == 2
    assert fresh_registry.get_sample_value("model_predicted_probability_bucket",
                                           {"model_version": "3", "le": "0.1"}) == 1
    assert fresh_registry.get_sample_value("model_predicted_probability_count", {"model_version": "3"}) == 3
    assert fresh_registry.get_sample_value("model_prediction_count", {"model_version": "3"}) is None


def test_an_all_numeric_contract_is_replayed_too(datasets) -> None:
    """A contract without categorical columns leaves the categorical branch unfitted (no columns): the
    replay skips it instead of failing its load-time check and falling back to sklearn."""
    data = datasets["wine"]
    spec = dataclasses.replace(data.spec, categorical=())
    numeric = dataclasses.replace(data, spec=spec)
    pipeline = numeric.fit()
    scorer = compile_scorer(pipeline, spec, data.contract, data.task)
    assert scorer is not None, "an all-numeric pipeline fell back to sklearn"
    records = data.records(data.test)
    expected = data.task.predict(pipeline, build_features(data.test, spec))
    np.testing.assert_allclose(scorer.output(records), expected, rtol=1e-12, atol=1e-9)
