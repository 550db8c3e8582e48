"""Prometheus metrics of the prediction service, exposed on BentoML's ``/metrics``.

The names and labels are an interface: alert rules are written against them. Create them with
:func:`service_metrics` from the service's ``__init__``, never at import: BentoML points
``PROMETHEUS_MULTIPROC_DIR`` at a shared directory before a worker starts, and only metrics
created after that are aggregated across workers.

What a model's answers are counted in depends on its task: binary, ``model_predicted_class_total``
by label and the ``model_predicted_probability`` histogram (as before tasks); multiclass, the
label counters ``model_predicted_class_total`` and ``model_predictions_by_class_total`` (every
class's series exists at 0); regression, the ``model_prediction`` histogram, bucketed at the
training target's quantiles (``target_summary.quantiles`` of the model that serves when the
service starts: a histogram's buckets are fixed once created).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlops_template.serving.routing import REFUSAL_REASONS

REQUEST_OUTCOMES = ("success", "rejected", "error", "unavailable")
RECORD_OUTCOMES = ("scored", "rejected")
MODEL_OUTCOMES = ("success", "error")
REJECT_REASONS = ("validation", "too_many_records", "body_too_large", "content_type",
                  "malformed_json", "duplicate_header", "body_timeout", "overload", "not_ready")
UNAUTHORIZED_REASONS = ("missing_key", "unknown_key", "key_file_unusable")
ISOLATION_CAUSES = ("input", "service")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
TASK_NAMES = ("binary", "multiclass", "regression")


def prediction_buckets(summary: Mapping[str, Any] | None) -> tuple[float, ...] | None:
    """Histogram bounds for a regression's predictions: the training target's distinct quantiles,
    ascending (None when the summary has none: prometheus_client's default buckets are used)."""
    quantiles = (summary or {}).get("quantiles") or {}
    values = sorted({float(v) for v in quantiles.values() if v is not None and np.isfinite(float(v))})
    return tuple(values) or None


class ServiceMetrics:
    """The service's own counters and histograms; every series a model can produce exists at 0.

    Per-model series (latency, predictions, ``model_version_requests_total``) are labelled by
    ``model_version``, so a canary's champion and challenger can be compared side by side.
    """

    def __init__(self, model_name: str, task: str = "binary", classes: tuple[str, ...] = (),
                 buckets: tuple[float, ...] | None = None) -> None:
        """Register the metrics; :meth:`serving` names the models being served.

        ``task`` chooses the prediction metrics (see the module docstring); ``classes`` are a
        multiclass model's, ``buckets`` a regression histogram's bounds (:func:`prediction_buckets`).
        """
        from prometheus_client import Counter, Gauge, Histogram

        if task not in TASK_NAMES:
            raise ValueError(f"no prediction metrics for task {task!r}; known: {TASK_NAMES}")
        self.model_name = model_name
        self.task = task
        self.classes = classes
        self.latency = Histogram(
            "model_prediction_latency_seconds", "Time to score one batch of records",
            ["model_version"], buckets=LATENCY_BUCKETS,
        )
        self.requests = Counter("model_requests_total", "Prediction requests by outcome",
                                ["outcome"])
        self.version_requests = Counter("model_version_requests_total",
                                        "Requests that reached a model, by model and outcome",
                                        ["model_version", "outcome"])
        self.records = Counter("model_records_total", "Records received, by outcome",
                               ["outcome"])
        self.rejections = Counter("model_rejected_requests_total",
                                  "Prediction requests refused, by reason", ["reason"])
        self.predicted_class: Any = None
        self.probability: Any = None
        self.by_class: Any = None
        self.prediction: Any = None
        if task in ("binary", "multiclass"):
            self.predicted_class = Counter("model_predicted_class_total", "Records scored, by predicted label",
                                           ["model_version", "label"])
        if task == "binary":
            self.probability = Histogram(
                "model_predicted_probability", "Predicted probability of the positive class",
                ["model_version"], buckets=PROBABILITY_BUCKETS,
            )
        elif task == "multiclass":
            self.by_class = Counter("model_predictions_by_class_total",
                                    "Records scored, by predicted class (every class listed)",
                                    ["model_version", "label"])
        else:
            self.prediction = Histogram(
                "model_prediction", "Predicted value, bucketed at the training target's quantiles",
                ["model_version"], buckets=buckets or Histogram.DEFAULT_BUCKETS,
            )
        self.info = Gauge("model_info", "The models being served (1; 0 once replaced)",
                          ["model_name", "model_version", "sha256", "role"],
                          multiprocess_mode="max")
        self.log_dropped = Counter("model_inference_log_dropped_total",
                                   "Inference-log entries lost (queue full, log closed or unwritable)")
        self.log_unwritable = Gauge("model_inference_log_unwritable",
                                    "1 while the inference log cannot be written (the service serves on)",
                                    multiprocess_mode="max")
        self.log_shipped = Counter("model_inference_log_shipped_bytes_total",
                                   "Inference-log bytes shipped to the object store (team mode)")
        self.log_ship_lost = Counter("model_inference_log_ship_lost_bytes_total",
                                     "Inference-log bytes rotated away before they could be shipped")
        self.log_ship_backlog = Gauge("model_inference_log_ship_backlog_bytes",
                                      "Inference-log bytes on local disk waiting to be shipped",
                                      multiprocess_mode="sum")
        self.reload_failures = Counter("model_routing_reload_failures_total",
                                       "Routing reloads refused (bad file or model); old models kept")
        self.routing_refused = Counter("model_routing_refused_total",
                                       "Routing documents refused by a trust check (signature, digests), "
                                       "by reason; old models kept", ["reason"])
        # min across workers: 0 while any worker serves other models than its routing document names
        self.routing_applied = Gauge("model_routing_applied",
                                     "1 when the routing document's models serve (or no document is configured); "
                                     "0 while a document is retried or refused (see /readyz)",
                                     multiprocess_mode="min")
        # min across workers: 0 while any worker serves no verified model (/readyz says why)
        self.ready = Gauge("model_ready", "1 when a verified model serves, 0 when not ready (see /readyz)",
                           multiprocess_mode="min")
        self.write_timeouts = Counter("model_response_write_timeouts_total",
                                      "Answers abandoned because the client did not read them in time")
        self.unauthorized = Counter("model_unauthorized_requests_total",
                                    "Requests refused with 401 (API_KEYS_FILE set), by reason", ["reason"])
        self.isolations = Counter("model_batch_isolations_total",
                                  "Failed scoring calls whose requests were re-scored one by one")
        self.isolated_failures = Counter("model_isolated_failures_total",
                                         "Requests that failed on their own after an isolation, by cause "
                                         "(input: answered 422; service: answered 500)", ["cause"])
        self._info_labels: set[tuple[str, str, str]] = set()
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        for outcome in RECORD_OUTCOMES:
            self.records.labels(outcome)
        for reason in REJECT_REASONS:
            self.rejections.labels(reason)
        for reason in REFUSAL_REASONS:
            self.routing_refused.labels(reason)
        for reason in UNAUTHORIZED_REASONS:
            self.unauthorized.labels(reason)
        for cause in ISOLATION_CAUSES:
            self.isolated_failures.labels(cause)

    def serving(self, models: list[tuple[str, str, str]]) -> None:
        """Publish the served models as ``(model_version, sha256, role)``; zero replaced ones."""
        for labels in self._info_labels - set(models):
            self.info.labels(self.model_name, *labels).set(0)
        for version, sha256, role in models:
            self.info.labels(self.model_name, version, sha256, role).set(1)
            self.latency.labels(version)
            if self.probability is not None:
                self.probability.labels(version)
            if self.prediction is not None:
                self.prediction.labels(version)
            for label in self.classes if self.by_class is not None else ():
                self.by_class.labels(version, label)
            for outcome in MODEL_OUTCOMES:
                self.version_requests.labels(version, outcome)
        self._info_labels = set(models)

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

    def answered(self, model_version: str, outcome: str) -> None:
        """Count a request one model answered (``success``) or failed to score (``error``)."""
        self.version_requests.labels(model_version, outcome).inc()

    def isolated(self, input_failures: int, service_failures: int) -> None:
        """Count one isolation of a failed scoring call and whom its failures were blamed on."""
        self.isolations.inc()
        self.isolated_failures.labels("input").inc(input_failures)
        self.isolated_failures.labels("service").inc(service_failures)

    def scored(self, model_version: str, seconds: float, output: np.ndarray,
               answers: list[dict[str, Any]]) -> None:
        """Record one scoring call: its latency, and the distribution of its predictions.

        ``output`` is the task's output for the call's records, ``answers`` their response bodies.
        """
        self.latency.labels(model_version).observe(seconds)
        self.records.labels("scored").inc(len(answers))
        if self.predicted_class is not None:
            values, counts = np.unique([answer["label"] for answer in answers], return_counts=True)
            for label, count in zip(values.tolist(), counts.tolist(), strict=True):
                self.predicted_class.labels(model_version, label).inc(count)
                if self.by_class is not None:
                    self.by_class.labels(model_version, label).inc(count)
        if self.probability is not None:
            observe_many(self.probability.labels(model_version), output)
        if self.prediction is not None:
            observe_many(self.prediction.labels(model_version), output)


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
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(values.sum()))


@functools.cache
def service_metrics(model_name: str, task: str = "binary", classes: tuple[str, ...] = (),
                    buckets: tuple[float, ...] | None = None) -> ServiceMetrics:
    """The process's metrics, created once (a second registration would raise)."""
    return ServiceMetrics(model_name, task, classes, buckets)
