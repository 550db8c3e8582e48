"""The BentoML service: validates records against the contract and scores them with the model.

How the service finds its model, in order:

1. the ``model_tag`` bento argument that :func:`mlops_template.pipeline.packaging.package_model` writes
   into the bento, so a served bento always uses the exact model it was built (and shipped) with;
2. the ``MODEL_TAG`` environment variable, when run outside a bento (``bentoml serve
   mlops_template.serving.service:PredictionService``);
3. ``<MODEL_NAME>:latest`` from the BentoML model store (``MODEL_NAME`` defaults to
   ``adult-income``).

That model's contract defines the request schema. With ``ROUTING_FILE`` (or ``ROUTING_URL``) set,
the models that score are instead the routing document's champion and challenger
(:mod:`mlops_template.serving.routing`), loaded and verified by
:mod:`mlops_template.serving.loading` and followed by :mod:`mlops_template.serving.reloader`: new
models load off the request path and replace the old ones in one reference assignment, so
requests in flight finish on the model they started with and none fails; a document whose
models do not load is retried until they do (``model_routing_applied`` is 0 meanwhile); one
refused by a trust check is counted (``model_routing_refused_total{reason}``), shown on
``/readyz`` (still 200) as ``routing_refused`` and not retried until it changes. Until a document
applies, the pinned model (checked against the bento's ``model_sha256``) serves. With a
challenger, a request goes to it when the hash of its routing key falls under ``canary_share``
(:func:`mlops_template.serving.routing.routes_to_challenger`). The routing key is never the
client's choice: it is the name of the request's API key when ``API_KEYS_FILE`` is set (one
client, one model), else the service's own request id (:mod:`mlops_template.serving.auth`). All
records of one request go to the same model, and its answers name that model's version.

Every scored record is appended to the inference log (:mod:`mlops_template.serving.inference_log`)
without ever slowing or failing the request; dropped entries are counted in
``model_inference_log_dropped_total``.

The model directory holds the contract, so the request model (``Record``) is built from the
same declaration that validated the training data; its ``serving.json`` names the task
(:mod:`mlops_template.core.tasks`), which shapes the answer (``Prediction``: binary ``probability``
and ``label``, multiclass ``label`` and ``probabilities``, regression ``prediction``), the
inference log's fields and the prediction metrics. Models served through routing answer for
the same task. The sklearn pipeline is loaded only after
its sha256 is verified: a tampered model leaves the service running but not ready (``/readyz``
answers 503 with ``{"ready": false, "reason": ...}`` naming the model and the failed check,
``/predict`` answers 503 saying the same, ``model_ready`` is 0) instead of serving it.

A request passes through :class:`~mlops_template.serving.guard.RequestGuard` (size, content
type, JSON, contract validation, concurrency limit; every refusal is a small JSON 4xx/503) before
``predict``, which hands its rows to a :class:`~mlops_template.serving.microbatch.MicroBatcher` so that
concurrent requests are scored in one vectorised call. A batch is scored by the numpy replay of
the fitted pipeline (:mod:`mlops_template.serving.scoring`, run on the event loop)
when the replay passed its check against the pipeline at load time, else by the sklearn
pipeline on a scoring thread. Metrics are in :mod:`mlops_template.serving.metrics`.

Settings come from the environment, read once at import (:mod:`mlops_template.serving.settings`).
"""

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bentoml
from bentoml.exceptions import InternalServerError, ServiceUnavailable
from starlette.responses import JSONResponse

from mlops_template.core import objectstore
from mlops_template.core.contract import load_contract
from mlops_template.core.features import FeatureSpec
from mlops_template.core.package_files import CONTRACT_FILE, FEATURE_SPEC_FILE
from mlops_template.serving import routing
from mlops_template.serving.auth import ApiKeyAuth
from mlops_template.serving.guard import GuardRuntime, GuardSettings, RequestGuard
from mlops_template.serving.inference_log import InferenceLog, inference_entries
from mlops_template.serving.loading import ModelLoader
from mlops_template.serving.log_filters import install_log_filter
from mlops_template.serving.log_shipping import LogShipper
from mlops_template.serving.metrics import prediction_buckets, service_metrics
from mlops_template.serving.microbatch import InputError, Isolation, MicroBatcher
from mlops_template.serving.models import (
    ServedModel,
    Serving,
    describe_load_failure,
    is_explained_load_failure,
    model_reference,
    pinned_sha256,
    read_serving_config,
    served_task,
)
from mlops_template.serving.openapi import declare_json_responses, document_openapi
from mlops_template.serving.reloader import ReloadHooks, RoutingReloader
from mlops_template.serving.request_context import client_request_id_of, request_id_of, routing_key_of
from mlops_template.serving.schema import Prediction, prediction_model, request_models  # noqa: F401 (Prediction: benchmarks.constant_service answers with it)
from mlops_template.serving.scoring import contract_sample
from mlops_template.serving.settings import ServingSettings
from mlops_template.serving.tuning import freeze_startup_objects, limit_native_threads

logger = logging.getLogger(__name__)
# BentoML's server logging passes only warnings from loggers it does not know; the package's own
# lines (which model serves, how it scores, routing reloads) are wanted in the server log. Nothing
# may log at import time: BentoML caches the worker name of its log lines on the first line.
logging.getLogger("mlops_template").setLevel(logging.INFO)

RETIRE_DRAIN_SECONDS = 30.0  # a replaced model's batcher answers its queued requests first
PREDICT_PATH = "/predict"
LOG_BACKUPS = 10  # rotated inference-log files kept per worker; LOG_SPOOL_BYTES is shared among them

SETTINGS = ServingSettings.from_env()
# Located and read at import: the request model must exist before the service class is defined.
# Models served through the routing file are expected to share this contract and feature columns.
_STORED_MODEL = bentoml.models.get(model_reference(SETTINGS))
MODEL_DIR = Path(_STORED_MODEL.path)
CONTRACT = load_contract(MODEL_DIR / CONTRACT_FILE)
SERVING_CONFIG = read_serving_config(MODEL_DIR)
TASK = served_task(SERVING_CONFIG, CONTRACT)  # every model served answers for this task
# The routing document's signature is checked with the deploy key's public half (ROUTING_VERIFY_KEY_FILE);
# team mode refuses to start without one. The pinned model is checked against the bento's model_sha256.
ROUTING_VERIFY_KEY = (routing.verify_key_from_env(objectstore.is_url(SETTINGS.routing_location))
                      if SETTINGS.routing_location is not None else None)
PINNED_SHA256 = pinned_sha256()
LOADER = ModelLoader(CONTRACT, use_replay=SETTINGS.scorer == "auto", routing_location=SETTINGS.routing_location,
                     verify_key=ROUTING_VERIFY_KEY)
_RECORD_LIST, RECORDS, PredictRequest = request_models(
    CONTRACT, FeatureSpec.from_json(MODEL_DIR / FEATURE_SPEC_FILE).source_columns, SETTINGS.max_records)
# The task's answer model (binary: Prediction); the API's return annotation, so /docs.json shows it.
PREDICTION = prediction_model(TASK)
if TYPE_CHECKING:
    RecordList = list[Any]  # what a type checker can know of a model built from the contract at run time
    PredictionList = list[Any]
else:
    RecordList = _RECORD_LIST  # the contract's record model in a length-bounded list: BentoML's request schema
    PredictionList = list[PREDICTION]
# Filled in by each worker's service instance; read by that worker's RequestGuard.
GUARD_RUNTIME = GuardRuntime()
# A record the model is checked to score: when a request fails alone, the model still scoring this
# one shows that the request's own input caused the failure (422), not the service (500).
CONTROL_ROWS = contract_sample(CONTRACT, rows=2)[:1]


def guard_settings() -> GuardSettings:
    """The request guard's limits, from the settings."""
    return GuardSettings(path=PREDICT_PATH, request_model=PredictRequest, max_body_bytes=SETTINGS.max_body_bytes,
                         max_records=SETTINGS.max_records, max_concurrency=SETTINGS.max_concurrency,
                         log_payloads=SETTINGS.log_payloads, body_timeout_s=SETTINGS.body_timeout,
                         send_timeout_s=SETTINGS.request_timeout)


@bentoml.service(traffic={"timeout": SETTINGS.request_timeout}, workers=SETTINGS.workers)
class PredictionService:
    """Scores records with the served model(s); not ready when no verified model is loaded."""

    model_ref = bentoml.models.BentoModel(_STORED_MODEL.tag)

    def __init__(self) -> None:
        """Load and verify the model(s), then set up scoring, metrics and the inference log."""
        self.metrics = service_metrics(_STORED_MODEL.tag.name, TASK.name, TASK.classes,
                                       prediction_buckets(SERVING_CONFIG.get("target_summary")))
        limit_native_threads()
        # One scoring thread (sklearn-pipeline scoring): model calls never compete for the GIL.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        # Routing reloads read and verify models here, never on the event loop.
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self.batching = SETTINGS.batching
        self.unready_reason: str | None = None
        self.routing_refused: dict[str, str] | None = None
        self.routing_path = SETTINGS.routing_location
        self.reloader = self._reloader(self.routing_path) if self.routing_path is not None else None
        self.metrics.routing_applied.set(1)  # nothing to apply without a routing document; else the reloader says
        self.watcher: asyncio.Task[None] | None = None
        self.serving: Serving | None = self._initial_serving()
        if self.serving is not None:
            self._activate(self.serving)
        self.shipper: LogShipper | None = None
        self.inference_log = self._open_inference_log()
        GUARD_RUNTIME.metrics = self.metrics
        GUARD_RUNTIME.is_ready = self.__is_ready__
        GUARD_RUNTIME.not_ready_reason = self.not_ready_reason
        GUARD_RUNTIME.readiness_detail = self.readiness_detail
        self.metrics.ready.set(1 if self.__is_ready__() else 0)
        install_log_filter()
        logger.info("ready=%s, batching=%s, routing=%s, inference log=%s", self.__is_ready__(),
                    self.batching, self.routing_path,
                    self.inference_log.directory if self.inference_log else None)

    def __is_ready__(self) -> bool:
        """Ready only when a verified model is loaded (drives ``/readyz``)."""
        return self.serving is not None

    def not_ready_reason(self) -> str | None:
        """Why the service is not ready (``/readyz``'s and ``/predict``'s 503 say it), or None."""
        if self.serving is not None:
            return None
        return self.unready_reason or "no verified model is loaded"

    def readiness_detail(self) -> dict[str, Any]:
        """What ``/readyz`` adds while ready: with a routing document, whether its models serve (and
        which do, the retries' last error if any), and the last document refused, and why."""
        detail: dict[str, Any] = {}
        if self.reloader is not None:
            serving = self.serving
            detail["routing"] = {**self.reloader.state(), "serving": {
                role: m.version for m, role in serving.roles()} if serving is not None else {}}
        if self.routing_refused is not None:
            detail["routing_refused"] = self.routing_refused
        return detail

    def _refused(self, location: str | Path, exc: routing.RoutingRefused) -> None:
        """Count and remember a refused routing document (the caller logs it, once per document,
        and counts it among the reload failures)."""
        self.metrics.routing_refused.labels(exc.reason).inc()
        self.routing_refused = {"reason": exc.reason, "detail": str(exc), "document": str(location)}

    def _initial_serving(self) -> Serving | None:
        """The routing document's models if one is configured and loads, else the pinned model.

        The log names the cause of a failure: a routing document that cannot be read or breaks
        the schema, or the model it names (role, tag, and why: missing, checksum mismatch). A
        document whose models did not load is retried by the reloader (:mod:`~mlops_template.serving.reloader`).
        """
        tag = str(_STORED_MODEL.tag)
        if self.reloader is not None:
            path = self.reloader.location
            serving = self.reloader.start(lambda: routing.document_signature(path),
                                          lambda: LOADER.load_routing(path, None), f"the pinned model {tag}")
            if serving is not None:
                return serving
        try:
            return Serving(LOADER.load(tag, PINNED_SHA256))
        except Exception as exc:
            self.unready_reason = f"model {tag} {describe_load_failure(exc)}"
            logger.error("%s: not ready (%s: %s)", self.unready_reason, type(exc).__name__, exc,
                         exc_info=not is_explained_load_failure(exc))
            return None

    def _reloader(self, path: str | Path) -> RoutingReloader:
        """The routing document's reloader, reporting to this service's metrics and ``/readyz``."""
        async def read_signature() -> tuple[Any, ...] | None:
            return await asyncio.get_running_loop().run_in_executor(self.loader, routing.document_signature, path)

        hooks = ReloadHooks(failed=self.metrics.reload_failures.inc,
                            refused=lambda exc: self._refused(path, exc),
                            applied=lambda applied: self.metrics.routing_applied.set(1 if applied else 0))
        return RoutingReloader(path, read_signature, lambda: self._reload(path), SETTINGS.routing_poll_seconds, hooks)

    def _activate(self, serving: Serving) -> None:
        """Give new models a batcher and publish which models serve, in which role."""
        for model, _ in serving.roles():
            if model.batcher is None and self.batching:
                model.batcher = MicroBatcher(
                    functools.partial(self.score_rows, model), self._scoring_executor(model),
                    max_records=SETTINGS.batch_max_records, max_wait_s=SETTINGS.batch_wait_s,
                    control=CONTROL_ROWS, on_isolation=self.metrics.isolated,
                )
        self.metrics.serving([(m.version, m.sha256, role) for m, role in serving.roles()])
        logger.info("serving %s", ", ".join(f"{role} {m.tag} (v{m.version})"
                                            for m, role in serving.roles()))

    def _scoring_executor(self, model: ServedModel) -> ThreadPoolExecutor | None:
        """Where a model's batches run: the event loop for the numpy replay, else a thread.

        The replay is quick, cheaper than the GIL hand-offs between the loop and a scoring thread
        under load; the sklearn pipeline takes an order of magnitude longer, which the loop must
        not stall for.
        """
        return None if model.scorer.replay is not None else self.executor

    def _open_inference_log(self) -> InferenceLog | None:
        """This worker's inference log (created after the fork), or None when disabled."""
        if SETTINGS.inference_log_dir is None:
            return None
        try:
            log = InferenceLog(SETTINGS.inference_log_dir, max_bytes=SETTINGS.log_spool_bytes // (LOG_BACKUPS + 1),
                               backup_count=LOG_BACKUPS, on_drop=self.metrics.log_dropped.inc)
        except OSError as exc:  # an unwritable or full folder costs the log, never the service
            self.metrics.log_unwritable.set(1)
            logger.error("inference log disabled: %s cannot be written (%s); serving without it",
                         SETTINGS.inference_log_dir, exc)
            return None
        if SETTINGS.inference_log_url is not None:
            self.shipper = LogShipper(
                log.directory, SETTINGS.inference_log_url, SETTINGS.replica_id, SETTINGS.log_ship_seconds,
                on_shipped=self.metrics.log_shipped.inc, on_lost=self.metrics.log_ship_lost.inc,
                on_backlog=self.metrics.log_ship_backlog.set).start()
        return log

    @bentoml.on_startup
    async def on_worker_start(self) -> None:
        """Freeze start-up objects out of the collector; poll the routing file, if configured."""
        freeze_startup_objects()
        if self.reloader is not None:
            self.watcher = asyncio.create_task(self.reloader.run(), name="routing-watcher")

    async def _reload(self, path: str | Path) -> None:
        """Load the routing file's models off the loop, swap them in, retire replaced ones."""
        current = self.serving
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        serving = await loop.run_in_executor(self.loader, LOADER.load_routing, path, current)
        self._activate(serving)
        self.serving = serving  # the swap: one reference assignment
        self.routing_refused = None
        self.metrics.ready.set(1)  # also when no model served before (a pinned model that failed its check)
        logger.info("routing reloaded from %s in %.2f s", path, time.perf_counter() - started)
        kept = {id(m) for m, _ in serving.roles()}
        for model, _ in current.roles() if current is not None else []:
            if id(model) not in kept and model.batcher is not None:
                await model.batcher.close(drain_timeout_s=RETIRE_DRAIN_SECONDS)

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        """Stop watching, fail queued requests cleanly, stop the threads, close the log."""
        if self.watcher is not None:
            self.watcher.cancel()
        for model, _ in self.serving.roles() if self.serving is not None else []:
            if model.batcher is not None:
                await model.batcher.close()
        self.executor.shutdown(wait=True)
        self.loader.shutdown(wait=False, cancel_futures=True)
        if self.inference_log is not None:
            self.inference_log.close()
        if self.shipper is not None:
            self.shipper.close()

    def score_rows(self, model: ServedModel, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score validated records (dicts) in one call into the task's answers (without
        ``model_version``); record latency and prediction metrics."""
        started = time.perf_counter()
        output = model.scorer.output(rows)
        answers = model.answers(output)
        self.metrics.scored(model.version, time.perf_counter() - started, output, answers)
        return answers

    async def _score_on(self, model: ServedModel, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score rows with ``model``: through its batcher, or alone on the scoring thread.

        A failure is judged as the batcher judges one (:class:`~mlops_template.serving.microbatch.Isolation`):
        an :class:`~mlops_template.serving.microbatch.InputError` when the model still scores a control record.
        """
        if model.batcher is not None:
            return await model.batcher.submit(rows)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.score_rows, model, rows)
        except Exception as exc:
            isolation: Isolation[dict[str, Any]] = Isolation(
                functools.partial(self.score_rows, model), self.executor, CONTROL_ROWS, self.metrics.isolated)
            verdict = (await isolation.judge([(rows, exc)], others_scored=False))[0]
            if verdict is exc:
                raise
            raise verdict from exc

    @bentoml.api
    async def predict(self, records: RecordList, ctx: bentoml.Context) -> PredictionList:
        """Score a list of records; concurrent requests share one vectorised model call."""
        serving = self.serving  # one snapshot: a reload meanwhile does not affect this request
        if serving is None:
            raise ServiceUnavailable("model failed its integrity check")
        request_id = request_id_of(ctx)
        model = serving.pick(routing_key_of(ctx, request_id))
        rows = RECORDS.dump_python(records, exclude_unset=True)
        try:
            results = await self._score_on(model, rows)
        except InputError as exc:  # this request's own records, not the service: 422, batchmates unharmed
            logger.info("request %s: not scored by %s (422): %s", request_id, model.tag, exc)
            ctx.response.status_code = 422  # BentoML applies the context's status to any answer
            answer = JSONResponse({"error": "unscorable", "request_id": request_id, "message": str(exc),
                                   "details": [{"record": exc.record, "field": None, "message": str(exc)}]},
                                  status_code=422)
            return answer  # type: ignore[return-value]  # BentoML sends a Response as it is
        except Exception:
            self.metrics.answered(model.version, "error")
            logger.exception("request %s: scoring with %s failed", request_id, model.tag)
            raise InternalServerError("scoring failed") from None
        self.metrics.answered(model.version, "success")
        if self.inference_log is not None:
            self.inference_log.submit(inference_entries(request_id, model.version, rows, results,
                                                        client_request_id_of(ctx)))
        return [PREDICTION(**answer, model_version=model.version) for answer in results]


# @bentoml.service made the class a bentoml.Service object (type checkers do not apply class decorators).
SERVICE = cast("bentoml.Service[PredictionService]", PredictionService)
declare_json_responses(SERVICE)
# Added first, so outermost: a request without a valid key is refused before the guard reads its body.
SERVICE.add_asgi_middleware(ApiKeyAuth, keys_file=SETTINGS.api_keys_file, runtime=GUARD_RUNTIME)
SERVICE.add_asgi_middleware(RequestGuard, settings=guard_settings(), runtime=GUARD_RUNTIME)
document_openapi(SERVICE, PREDICT_PATH)
