"""Exact metric counts after a known sequence of requests, on a fresh two-worker server.

With two workers each request lands on either one; BentoML aggregates the workers' prometheus
files, so every scrape (whichever worker answers it) must show the totals of both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlops_template.core.features import build_features
from tests.support.http import stream_post

SIZES = (1, 2, 5)


@pytest.fixture(scope="module")
def counted(start_server: Callable, bento: dict) -> Iterator[tuple[str, list[float]]]:
    """A fresh server that got 3 good requests, 2 invalid ones and 1 too-large body."""
    with start_server("metrics", WORKERS="2") as url:
        probabilities: list[float] = []
        start = 0
        for size in SIZES:
            response = requests.post(f"{url}/predict",
                                     json={"records": bento["records"][start:start + size]},
                                     timeout=30)
            assert response.status_code == 200, response.text
            probabilities += [p["probability"] for p in response.json()]
            start += size
        for bad in ({"age": "old"}, {"sex": None}):
            response = requests.post(f"{url}/predict",
                                     json={"records": [{**bento["records"][0], **bad}]}, timeout=10)
            assert response.status_code == 400, response.text
        assert stream_post(url, iter(()), content_length=50 << 20).status == 413
        yield url, probabilities


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics, keyed by name and sorted label pairs."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_counters(counted: tuple[str, list[float]]) -> None:
    """Requests, records and rejections are counted exactly, on every scrape."""
    url, _ = counted
    for _ in range(4):  # successive scrapes may be answered by either worker
        samples = _samples(url)
        expected_requests = {"success": 3, "rejected": 3, "error": 0, "unavailable": 0}
        for outcome, count in expected_requests.items():
            assert _value(samples, "model_requests_total", outcome=outcome) == count, outcome
        assert _value(samples, "model_records_total", outcome="scored") == sum(SIZES)
        assert _value(samples, "model_records_total", outcome="rejected") == 2
        expected_reasons = {"validation": 2, "body_too_large": 1, "too_many_records": 0,
                            "content_type": 0, "malformed_json": 0, "overload": 0,
                            "not_ready": 0}
        for reason, count in expected_reasons.items():
            assert _value(samples, "model_rejected_requests_total", reason=reason) == count, reason


def test_predictions(counted: tuple[str, list[float]], bento: dict) -> None:
    """Labels, probability histogram, latency histogram and model_info match what was served."""
    url, probabilities = counted
    samples = _samples(url)
    test = bento["test"].iloc[: sum(SIZES)]
    expected = bento["pipeline"].predict_proba(build_features(test, bento["spec"]))[:, 1]
    np.testing.assert_allclose(probabilities, expected, atol=1e-9)
    positives = int((expected >= 0.4).sum())
    labels = {label: value for (name, pairs), value in samples.items()
              if name == "model_predicted_class_total" for key, label in pairs if key == "label"}
    assert labels.get(">50K", 0) == positives
    assert labels.get("<=50K", 0) == len(expected) - positives
    version = {"model_version": "7"}
    assert _value(samples, "model_predicted_probability_count", **version) == len(expected)
    assert _value(samples, "model_predicted_probability_sum", **version) == pytest.approx(
        expected.sum())
    for bound in np.round(np.arange(0.1, 1.01, 0.1), 1):
        le = f"{bound:.1f}"
        assert _value(samples, "model_predicted_probability_bucket", le=le, **version) == \
            int((expected <= bound).sum()), le
    # Requests sent one after another: each is scored in its own model call.
    assert _value(samples, "model_prediction_latency_seconds_count", **version) == len(SIZES)
    info = [(pairs, value) for (name, pairs), value in samples.items() if name == "model_info"]
    assert len(info) == 1 and info[0][1] == 1
    assert dict(info[0][0])["model_version"] == "7" and len(dict(info[0][0])["sha256"]) == 64
