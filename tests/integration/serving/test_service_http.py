"""End-to-end test of the packaged service: a real ``bentoml serve`` process spoken to over HTTP.

A tiny model is trained and packaged into a temporary BentoML store; the bento is then served
exactly as a deployment would serve it, and the answers are compared with the offline pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from mlops_template.core.features import build_features
from tests.support.servers import (
    THRESHOLD,
    package_in_child,
    records_of,
    start_bento_server,
    stop_server,
    train_small_model,
    wait_ready,
)

logger = logging.getLogger(__name__)

MAX_RECORDS = 500


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Train, package into a temporary BentoML home, and yield what the tests need."""
    root = tmp_path_factory.mktemp("service")
    home = root / "bentoml"
    model_dir = root / "model"
    model_dir.mkdir()
    test, pipeline, spec = train_small_model(model_dir)
    started = time.monotonic()
    # In a child process: BentoML fixes its store path once per process, and another test of
    # this session may have used the store in this one.
    result = package_in_child(model_dir, home, root / "export")
    logger.warning("package_model took %.1f s", time.monotonic() - started)
    yield {"result": result, "home": home, "root": root, "test": test,
           "pipeline": pipeline, "spec": spec}


@pytest.fixture(scope="module")
def server(packaged: dict) -> Iterator[str]:
    """One real server for the whole module."""
    process, url = start_bento_server(packaged["result"]["bento_tag"], packaged["home"],
                                      packaged["root"] / "serve.log", MAX_RECORDS=str(MAX_RECORDS))
    try:
        started = time.monotonic()
        wait_ready(url, process)
        logger.warning("server ready after %.1f s", time.monotonic() - started)
        yield url
    finally:
        stop_server(process)


def test_package_result(packaged: dict) -> None:
    """The archive exists under the service name and the tags are returned."""
    result = packaged["result"]
    assert Path(result["archive"]).name == "champion.bento"
    assert Path(result["archive"]).stat().st_size > 0
    assert result["bento_tag"].startswith("adult_income_service:")
    assert result["model_tag"].startswith("adult-income:")
    assert len(result["sha256"]) == 64


def assert_matches_offline(url: str, packaged: dict) -> None:
    """Served probabilities equal the offline pipeline's, and labels follow the threshold."""
    test = packaged["test"]
    response = requests.post(f"{url}/predict", json={"records": records_of(test)}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = packaged["pipeline"].predict_proba(build_features(test, packaged["spec"]))[:, 1]
    served = np.array([p["probability"] for p in body])
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)
    labels = [">50K" if p >= THRESHOLD else "<=50K" for p in served]
    assert [p["label"] for p in body] == labels
    assert {p["model_version"] for p in body} == {"7"}


def test_predict_matches_offline(packaged: dict, server: str) -> None:
    """The default server scores with the numpy replay, and it equals the offline pipeline."""
    assert_matches_offline(server, packaged)
    log = (packaged["root"] / "serve.log").read_text(encoding="utf-8")
    assert "scores with the numpy replay of its pipeline" in log


def test_sklearn_scorer_matches_offline(bento: dict, start_server) -> None:
    """``SCORER=pipeline`` scores with the sklearn pipeline itself, with the same answers."""
    with start_server("sklearn-scorer", SCORER="pipeline") as url:
        assert_matches_offline(url, bento)
    log = (Path(bento["root"]) / "serve-sklearn-scorer.log").read_text(encoding="utf-8")
    assert "scores with its sklearn pipeline" in log


@pytest.mark.parametrize(
    "change, field",
    [
        ({"age": "forty"}, "age"),
        ({"education": "Kindergarten"}, "education"),
        ({"age": None}, "age"),
        ({"hours_per_week": 40.5}, "hours_per_week"),
        ({"shoe_size": 42}, "shoe_size"),
    ],
    ids=["string-for-int", "unknown-category", "null-required", "fractional-int", "extra-field"],
)
def test_bad_record_is_400(packaged: dict, server: str, change: dict, field: str) -> None:
    """An invalid record is refused with 400 naming the field; the service keeps answering."""
    record = {**records_of(packaged["test"].iloc[:1])[0], **change}
    response = requests.post(f"{server}/predict", json={"records": [record]}, timeout=10)
    assert response.status_code == 400, response.text
    assert field in response.text
    assert requests.get(f"{server}/readyz", timeout=5).status_code == 200


def test_missing_field_is_400(packaged: dict, server: str) -> None:
    """A record without a required field is refused with 400 naming it."""
    record = records_of(packaged["test"].iloc[:1])[0]
    del record["marital_status"]
    response = requests.post(f"{server}/predict", json={"records": [record]}, timeout=10)
    assert response.status_code == 400, response.text
    assert "marital_status" in response.text


def test_unused_and_nullable_fields_may_be_omitted(packaged: dict, server: str) -> None:
    """Columns the model does not use (featurize.drop) and nullable ones may be left out."""
    full = records_of(packaged["test"].iloc[:1])[0]
    record = {k: v for k, v in full.items() if k not in ("fnlwgt", "education", "workclass")}
    response = requests.post(f"{server}/predict", json={"records": [record, {**full, "workclass": None}]},
                             timeout=10)
    assert response.status_code == 200, response.text
    first, second = response.json()
    assert first["probability"] == pytest.approx(second["probability"], abs=1e-12)


def test_empty_list_is_4xx(server: str) -> None:
    """An empty request is a client error."""
    response = requests.post(f"{server}/predict", json={"records": []}, timeout=10)
    assert 400 <= response.status_code < 500, response.text


def test_too_many_records_is_4xx(packaged: dict, server: str) -> None:
    """More records than MAX_RECORDS are refused before scoring."""
    records = records_of(packaged["test"].iloc[:1]) * (MAX_RECORDS + 1)
    response = requests.post(f"{server}/predict", json={"records": records}, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    assert requests.post(f"{server}/predict", json={"records": records[:MAX_RECORDS]},
                         timeout=30).status_code == 200


def test_tampered_model_is_not_ready(packaged: dict, server: str) -> None:
    """Flipped bytes in the stored model: /readyz is not 200 and /predict does not crash.

    Runs last in this module (it uses its own server) and tampers with the shared store, so the
    healthy server above has already loaded its model.
    """
    name, version = packaged["result"]["model_tag"].split(":")
    model_file = packaged["home"] / "models" / name / version / "model.skops"  # the store's layout
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    process, url = start_bento_server(packaged["result"]["bento_tag"], packaged["home"],
                                      packaged["root"] / "serve-tampered.log",
                                      MAX_RECORDS=str(MAX_RECORDS))
    try:
        wait_ready(url, process, "/livez")
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
        record = records_of(packaged["test"].iloc[:1])
        response = requests.post(f"{url}/predict", json={"records": record}, timeout=10)
        assert response.status_code == 503, response.text
        assert process.poll() is None
    finally:
        stop_server(process)
