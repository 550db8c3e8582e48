"""Prometheus metrics of the prediction service, exposed on BentoML's ``/metrics``.

The names and labels are an interface: alert rules are written against them. Create them with
:func:`service_metrics` from the service's ``__init__``, never at import: BentoML points
``PROMETHEUS_MULTIPROC_DIR`` at a shared directory before a worker starts, and only metrics
created after that are aggregated across workers.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

REQUEST_OUTCOMES = ("success", "rejected", "error", "unavailable")
RECORD_OUTCOMES = ("scored", "rejected")
REJECT_REASONS = ("validation", "too_many_records", "body_too_large", "content_type",
                  "malformed_json", "overload", "not_ready")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class ServiceMetrics:
    """The service's own counters and histograms, pre-labelled so every series exists at 0."""

    def __init__(self, model_name: str, model_version: str, sha256: str) -> None:
        """Register the metrics for the model being served."""
        from prometheus_client import Counter, Gauge, Histogram

        self.model_version = model_version
        self.latency = Histogram(
            "model_prediction_latency_seconds", "Time to score one batch of records",
            ["model_version"], buckets=LATENCY_BUCKETS,
        ).labels(model_version)
        self.requests = Counter("model_requests_total", "Prediction requests by outcome",
                                ["outcome"])
        self.records = Counter("model_records_total", "Records received, by outcome",
                               ["outcome"])
        self.rejections = Counter("model_rejected_requests_total",
                                  "Prediction requests refused, by reason", ["reason"])
        self.predicted_class = Counter("model_predicted_class_total",
                                       "Records scored, by predicted label",
                                       ["model_version", "label"])
        self.probability = Histogram(
            "model_predicted_probability", "Predicted probability of the positive class",
            ["model_version"], buckets=PROBABILITY_BUCKETS,
        ).labels(model_version)
        info = Gauge("model_info", "The model being served (always 1)",
                     ["model_name", "model_version", "sha256"], multiprocess_mode="max")
        info.labels(model_name, model_version, sha256).set(1)
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        for outcome in RECORD_OUTCOMES:
            self.records.labels(outcome)
        for reason in REJECT_REASONS:
            self.rejections.labels(reason)

    def rejected(self, reason: str, records: int = 0) -> None:
        """Count a refused request (and the records it carried, when known)."""
        outcome = "unavailable" if reason in ("overload", "not_ready") else "rejected"
        self.requests.labels(outcome).inc()
        self.rejections.labels(reason).inc()
        if records:
            self.records.labels("rejected").inc(records)

    def finished(self, outcome: str) -> None:
        """Count a request that reached the model (``success``, ``error`` or ``unavailable``)."""
        self.requests.labels(outcome).inc()

    def scored(self, seconds: float, probabilities: np.ndarray, labels: np.ndarray) -> None:
        """Record one scoring call: its latency, and the distribution of its predictions."""
        self.latency.observe(seconds)
        self.records.labels("scored").inc(len(probabilities))
        values, counts = np.unique(labels, return_counts=True)
        for label, count in zip(values, counts):
            self.predicted_class.labels(self.model_version, str(label)).inc(int(count))
        observe_many(self.probability, probabilities)


def observe_many(histogram: Any, values: np.ndarray) -> None:
    """Add many observations to a labelled histogram in one vectorised step.

    prometheus_client has no bulk ``observe``; this increments each bucket once by its count
    (the same bucket rule as ``observe``: the first upper bound >= value) and the sum once. It
    uses the histogram's ``_upper_bounds``/``_buckets``/``_sum``, stable across prometheus_client
    releases and pinned in requirements-serve.txt; tests check the exposed counts.
    """
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds)  # noqa: SLF001 - see docstring
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts):  # noqa: SLF001
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(values.sum()))  # noqa: SLF001


@functools.cache
def service_metrics(model_name: str, model_version: str, sha256: str) -> ServiceMetrics:
    """The process's metrics, created once (a second registration would raise)."""
    return ServiceMetrics(model_name, model_version, sha256)
