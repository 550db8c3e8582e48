"""A real ``bentoml serve`` of a regression and of a multiclass model answers every held-out row.

The models are HistGradientBoosting pipelines on sklearn's bundled public datasets (diabetes:
regression; wine: multiclass, 3 classes), packaged like the deploy stage packages (a BentoML model
with ``serving.json`` naming the task, its classes and the training target's summary, and a bento
pinned to it). Every held-out row must be answered 200 with the pipeline's own output, the answer
shaped for the task; ``/docs.json``, ``/metrics`` and the inference log follow the task too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlops_template.core.features import build_features
from mlops_template.serving.inference_log import read_log
from tests.support.servers import start_bento_server, stop_server, wait_ready
from tests.support.task_models import package_in_child, task_data
from tests.support.waiting import poll

DATASETS = ("diabetes", "wine")
SINGLE = 10  # the first held-out rows go one per request, the others in requests of BATCH
BATCH = 25
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """Both models packaged and served at once (a server each, inference log on); always stopped."""
    root = tmp_path_factory.mktemp("every-task")
    home = root / "bentoml"
    models = {name: task_data(name) for name in DATASETS}
    pipelines = {name: data.fit() for name, data in models.items()}
    packages = {name: data.package(root / "models", pipelines[name]) for name, data in models.items()}
    tags = package_in_child(packages, home)
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in DATASETS:
            log = root / f"serve-{name}.log"
            process, url = start_bento_server(tags[name]["bento_tag"], home, log, INFERENCE_LOG="on",
                                              INFERENCE_LOG_DIR=str(root / f"log-{name}"))
            stack.callback(stop_server, process)
            servers[name] = (process, url, log)
        for name, (process, url, log) in servers.items():
            try:
                wait_ready(url, process)
            except Exception:
                raise AssertionError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}") from None
        yield {name: {"url": url, "data": models[name], "pipeline": pipelines[name], "log_dir": root / f"log-{name}",
                      "summary": packages[name]["serving"]["target_summary"]}
               for name, (_, url, _) in servers.items()}


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _answers(url: str, records: list[dict]) -> list[dict]:
    """Post the records (singly, then in batches); every answer must be 200."""
    chunks = [records[i:i + 1] for i in range(SINGLE)] + [records[i:i + BATCH]
                                                         for i in range(SINGLE, len(records), BATCH)]
    answers: list[dict] = []
    with requests.Session() as session:
        for chunk in chunks:
            reply = session.post(f"{url}/predict", json={"records": chunk}, timeout=30)
            assert reply.status_code == 200, reply.text
            answers.extend(reply.json())
    return answers


def test_regression_answers_every_row_with_the_pipelines_prediction(served) -> None:
    """Each held-out diabetes row: 200, ``{"prediction", "model_version"}``, the pipeline's value; the
    ``model_prediction`` histogram is bucketed at the training target's quantiles; the log holds each."""
    model = served["diabetes"]
    data = model["data"]
    records = data.records(data.test)
    expected = model["pipeline"].predict(build_features(data.test, data.spec))
    answers = _answers(model["url"], records)
    assert [set(a) for a in answers] == [{"prediction", "model_version"}] * len(records)
    assert {a["model_version"] for a in answers} == {"1"}
    np.testing.assert_allclose([a["prediction"] for a in answers], expected, rtol=0, atol=TOLERANCE)
    samples = _samples(model["url"])
    version = (("model_version", "1"),)
    assert samples[("model_prediction_count", version)] == len(records)
    assert samples[("model_prediction_sum", version)] == pytest.approx(expected.sum())
    bounds = sorted(set(model["summary"]["quantiles"].values()))
    for bound in bounds:
        key = ("model_prediction_bucket", (("le", str(float(bound))), *version))
        assert samples[key] == int((expected <= bound + TOLERANCE).sum()), bound
    assert not any(name.startswith("model_predicted_probability") for name, _ in samples)
    log = poll(lambda: read_log(model["log_dir"]), lambda frame: len(frame) >= len(records), 15)
    log = log.sort_values(["request_id", "record_index"], kind="stable")
    assert len(log) == len(records)
    np.testing.assert_allclose(sorted(log["prediction"]), sorted(expected), rtol=0, atol=TOLERANCE)


def test_multiclass_answers_every_row_with_the_pipelines_probabilities(served) -> None:
    """Each held-out wine row: 200, the most probable class and every class's probability (the
    pipeline's); every class counted in ``model_predictions_by_class_total``; the log holds each."""
    model = served["wine"]
    data = model["data"]
    classes = list(data.task.classes)
    records = data.records(data.test)
    expected = data.task.predict(model["pipeline"], build_features(data.test, data.spec))
    answers = _answers(model["url"], records)
    assert [set(a) for a in answers] == [{"label", "probabilities", "model_version"}] * len(records)
    assert all(list(a["probabilities"]) == classes for a in answers)
    served_proba = np.array([[a["probabilities"][c] for c in classes] for a in answers])
    np.testing.assert_allclose(served_proba, expected, rtol=0, atol=TOLERANCE)
    assert [a["label"] for a in answers] == [classes[i] for i in expected.argmax(axis=1)]
    samples = _samples(model["url"])
    for index, label in enumerate(classes):
        key = ("model_predictions_by_class_total", (("label", label), ("model_version", "1")))
        assert samples[key] == int((expected.argmax(axis=1) == index).sum()), label
    log = poll(lambda: read_log(model["log_dir"]), lambda frame: len(frame) >= len(records), 15)
    assert len(log) == len(records)
    assert sorted(log["label"]) == sorted(a["label"] for a in answers)
    assert all(set(p) == set(classes) for p in log["probabilities"])


@pytest.mark.parametrize(("name", "fields"), [("diabetes", {"prediction", "model_version"}),
                                              ("wine", {"label", "probabilities", "model_version"})])
def test_docs_describe_the_task_answer(served, name, fields) -> None:
    """``/docs.json`` gives /predict's 200 answer as a list of the task's answer model."""
    document = requests.get(f"{served[name]['url']}/docs.json", timeout=10).json()
    schema = document["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    items = schema["items"]
    while "$ref" in items:
        items = document["components"]["schemas"][items["$ref"].rsplit("/", 1)[1]]
    assert set(items["required"]) == fields
    if name == "wine":
        assert items["properties"]["label"]["enum"] == list(served[name]["data"].task.classes)
