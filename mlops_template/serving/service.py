"""The BentoML service: validates records against the contract and scores them with the model.

How the service finds its model, in order:

1. the ``model_tag`` bento argument that :func:`mlops_template.pipeline.packaging.package_model` writes
   into the bento, so a served bento always uses the exact model it was built (and shipped) with;
2. the ``MODEL_TAG`` environment variable, when run outside a bento (``bentoml serve
   mlops_template.serving.service:PredictionService``);
3. ``<MODEL_NAME>:latest`` from the BentoML model store (``MODEL_NAME`` defaults to
   ``adult-income``).

That model's contract defines the request schema. With ``ROUTING_FILE`` set, the models that
score are instead the routing file's champion and challenger (see :mod:`mlops_template.serving.routing`),
loaded by tag from the same store and verified the same way. The file is polled for changes;
new models load off the request path and replace the old ones in one reference assignment, so
requests in flight finish on the model they started with and none fails. A file or model that
fails to load keeps the current models (``model_routing_reload_failures_total``). Every model is
checked against a digest from a record its writer cannot also rewrite: the bento's
``model_sha256`` argument for the pinned model, each routing slot's ``model_sha256`` (and, for an
archive fetched in team mode, ``archive_sha256``). In team mode the document must be signed with
the deploy key (``ROUTING_VERIFY_KEY_FILE`` holds its public half; a replica without one does not
start); on one machine too when that key is set. A document refused by such a check is counted
(``model_routing_refused_total{reason}``), logged once, shown on ``/readyz`` (still 200) as
``routing_refused``, and not retried until it changes; at start-up the pinned model serves. With a
challenger, a request goes to it when the hash of its routing key falls under ``canary_share``
(:func:`mlops_template.serving.routing.routes_to_challenger`). The routing key is never the
client's choice: it is the name of the request's API key when ``API_KEYS_FILE`` is set (one
client, one model), else the service's own request id (:mod:`mlops_template.serving.auth`). All
records of one request go to the same model, and its answers name that model's version.

Every scored record is appended to the inference log (:mod:`mlops_template.serving.inference_log`)
without ever slowing or failing the request; dropped entries are counted in
``model_inference_log_dropped_total``.

The model directory holds the contract, so the request model (``Record``) is built from the
same declaration that validated the training data. The sklearn pipeline is loaded only after
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
import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.exceptions import InternalServerError, NotFound, ServiceUnavailable
from starlette.responses import JSONResponse

from mlops_template.core import objectstore
from mlops_template.core.contract import load_contract
from mlops_template.core.features import FeatureSpec
from mlops_template.core.objectstore import StoreUnavailable
from mlops_template.serving import archives, routing
from mlops_template.serving.auth import KEY_NAME_STATE, ApiKeyAuth
from mlops_template.serving.guard import GuardRuntime, GuardSettings, RequestGuard, install_log_filter
from mlops_template.serving.inference_log import InferenceLog
from mlops_template.serving.log_shipping import LogShipper
from mlops_template.serving.metrics import service_metrics
from mlops_template.serving.microbatch import InputError, Isolation, MicroBatcher
from mlops_template.serving.models import (
    CONTRACT_FILE,
    FEATURE_SPEC_FILE,
    ModelDigestMismatch,
    ServedModel,
    Serving,
    describe_load_failure,
    is_explained_load_failure,
    load_served_model,
    model_reference,
    pinned_sha256,
)
from mlops_template.serving.schema import Prediction, request_models
from mlops_template.serving.scoring import contract_sample
from mlops_template.serving.settings import ServingSettings

logger = logging.getLogger(__name__)
# BentoML's server logging passes only warnings from loggers it does not know; the package's own
# lines (which model serves, how it scores, routing reloads) are wanted in the server log. Nothing
# may log at import time: BentoML caches the worker name of its log lines on the first line.
logging.getLogger("mlops_template").setLevel(logging.INFO)

GC_THRESHOLDS = (20_000, 100, 100)  # Python's default is (700, 10, 10)
RETIRE_DRAIN_SECONDS = 30.0  # a replaced model's batcher answers its queued requests first
MAX_RELOAD_BACKOFF_S = 30.0  # a failing routing reload is retried at most this far apart
PREDICT_PATH = "/predict"
LOG_BACKUPS = 10  # rotated inference-log files kept per worker; LOG_SPOOL_BYTES is shared among them

SETTINGS = ServingSettings.from_env()
# Located and read at import: the request model must exist before the service class is defined.
# Models served through the routing file are expected to share this contract and feature columns.
_STORED_MODEL = bentoml.models.get(model_reference(SETTINGS))
MODEL_DIR = Path(_STORED_MODEL.path)
CONTRACT = load_contract(MODEL_DIR / CONTRACT_FILE)
# The routing document's signature is checked with the deploy key's public half (ROUTING_VERIFY_KEY_FILE);
# team mode refuses to start without one. The pinned model is checked against the bento's model_sha256.
ROUTING_VERIFY_KEY = (routing.verify_key_from_env(objectstore.is_url(SETTINGS.routing_location))
                      if SETTINGS.routing_location is not None else None)
PINNED_SHA256 = pinned_sha256()
RecordList, RECORDS, PredictRequest = request_models(
    CONTRACT, FeatureSpec.from_json(MODEL_DIR / FEATURE_SPEC_FILE).source_columns, SETTINGS.max_records)
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


def _request_id(ctx: bentoml.Context) -> str:
    """The id the request guard gave this request (``-`` when called without the guard)."""
    return str(getattr(ctx.request.state, "request_id", "-"))


def _client_request_id(ctx: bentoml.Context) -> str | None:
    """The client's own ``X-Request-ID`` the guard kept apart, if it sent a sane one."""
    return getattr(ctx.request.state, "client_request_id", None)


def _routing_key(ctx: bentoml.Context, request_id: str) -> str:
    """What the canary split hashes: the request's API key name, else the service's request id.

    Never a header: a client that chose its model could steer the canary's verdict.
    """
    return getattr(ctx.request.state, KEY_NAME_STATE, None) or request_id


def freeze_startup_objects() -> None:
    """Keep garbage-collector pauses out of request latency.

    A full collection walks every tracked object, and a worker holds millions that live as long
    as it does (BentoML, pydantic, sklearn, the model). ``gc.freeze`` moves them out of the
    collector's view, and :data:`GC_THRESHOLDS` makes collections of what requests allocate
    rarer. Together they take the tail latency close to that with the collector off
    (``python -m benchmarks.serving`` measures it).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    logger.info("%d start-up objects frozen out of garbage collection", gc.get_freeze_count())


def limit_native_threads() -> None:
    """One OpenMP/BLAS thread per worker, unless ``OMP_NUM_THREADS`` says otherwise.

    Batches are small, and the event loop, the load balancer's health checks and other workers
    already compete for the cores, so a second native thread per model call mostly waits for a
    busy core. Scale with ``WORKERS`` instead.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


@bentoml.service(traffic={"timeout": SETTINGS.request_timeout}, workers=SETTINGS.workers)
class PredictionService:
    """Scores records with the served model(s); not ready when no verified model is loaded."""

    model_ref = bentoml.models.BentoModel(_STORED_MODEL.tag)

    def __init__(self) -> None:
        """Load and verify the model(s), then set up scoring, metrics and the inference log."""
        self.metrics = service_metrics(_STORED_MODEL.tag.name)
        limit_native_threads()
        # One scoring thread (sklearn-pipeline scoring): model calls never compete for the GIL.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        # Routing reloads read and verify models here, never on the event loop.
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self.batching = SETTINGS.batching
        self.routing_path = SETTINGS.routing_location
        self.routing_signature: tuple[Any, ...] | None = None
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
        return getattr(self, "unready_reason", None) or "no verified model is loaded"

    def readiness_detail(self) -> dict[str, Any]:
        """What ``/readyz`` adds while ready: the last routing document refused, and why."""
        refused = getattr(self, "routing_refused", None)
        return {"routing_refused": refused} if refused is not None else {}

    def _refused(self, location: str | Path, exc: routing.RoutingRefused) -> None:
        """Count and remember a refused routing document (the caller logs it, once per document,
        and counts it among the reload failures)."""
        self.metrics.routing_refused.labels(exc.reason).inc()
        self.routing_refused = {"reason": exc.reason, "detail": str(exc), "document": str(location)}

    @staticmethod
    def _as_refusal(exc: BaseException) -> routing.RoutingRefused | None:
        """The trust refusal ``exc`` is (a bad signature, a digest that differs), or None."""
        if isinstance(exc, routing.RoutingRefused):
            return exc
        if isinstance(exc, ModelDigestMismatch):
            return routing.RoutingRefused("model_sha256", str(exc))
        return None

    def _initial_serving(self) -> Serving | None:
        """The routing file's models if one is configured and loads, else the pinned model.

        The log names the cause of a failure: a routing document that cannot be read or breaks
        the schema, or the model it names (role, tag, and why: missing, checksum mismatch).
        """
        self.unready_reason: str | None = None
        self.routing_refused: dict[str, str] | None = None
        if self.routing_path is not None:
            self.routing_signature = self._signature_at_start(self.routing_path)
            serving = self._initial_routing(self.routing_path)
            if serving is not None:
                return serving
        tag = str(_STORED_MODEL.tag)
        try:
            return Serving(self._load(tag, PINNED_SHA256))
        except Exception as exc:
            self.unready_reason = f"model {tag} {describe_load_failure(exc)}"
            logger.error("%s: not ready (%s: %s)", self.unready_reason, type(exc).__name__, exc,
                         exc_info=not is_explained_load_failure(exc))
            return None

    def _initial_routing(self, path: str | Path) -> Serving | None:
        """The routing document's models at start-up, or None (logged and counted) if unusable.

        A document refused by a trust check (signature, digests) is remembered for ``/readyz``.
        """
        pinned = _STORED_MODEL.tag
        try:
            document = routing.check_trusted(routing.read_routing(path), ROUTING_VERIFY_KEY,
                                             objectstore.is_url(path))
        except routing.RoutingRefused as exc:
            self._refused(path, exc)
            self.metrics.reload_failures.inc()
            logger.error("routing document %s refused at startup (%s: %s): serving the pinned model %s",
                         path, exc.reason, exc, pinned)
            return None
        except Exception as exc:
            self.metrics.reload_failures.inc()
            logger.error("routing file %s unusable at startup (%s: %s): serving the pinned model %s",
                         path, type(exc).__name__, exc, pinned)
            return None
        loaded = []  # loaded one by one so that a failure names its model
        for role, entry in routing.slots(document):
            tag = entry["model_tag"]
            try:
                loaded.append(self._load(tag, entry["model_sha256"], entry.get("archive_sha256")))
            except Exception as exc:
                refusal = self._as_refusal(exc)
                if refusal is not None:
                    self._refused(path, refusal)
                self.metrics.reload_failures.inc()
                logger.error("routing file %s: its %s model %s %s at startup (%s: %s): serving the pinned model %s",
                             path, role, tag, describe_load_failure(exc), type(exc).__name__, exc, pinned,
                             exc_info=refusal is None and not is_explained_load_failure(exc))
                return None
        try:  # the loaded models are reused by tag and digest
            return self._load_routing(path, Serving(*loaded))
        except Exception:
            self.metrics.reload_failures.inc()
            logger.exception("routing file %s unusable at startup: serving the pinned model %s", path, pinned)
            return None

    @staticmethod
    def _signature_at_start(location: str | Path) -> tuple[Any, ...] | None:
        """The routing document's signature, or None when it cannot be read now (retried later)."""
        try:
            return routing.document_signature(location)
        except StoreUnavailable as exc:
            logger.error("routing document %s unreachable at startup (%s)", location, exc)
            return None

    @staticmethod
    def _load(tag: str, expected_sha256: str | None, archive_sha256: str | None = None) -> ServedModel:
        """Load and verify one model with this service's contract and scorer setting.

        ``expected_sha256`` is the skops digest from the record that names the model (routing
        slot, bento argument). In team mode a model missing from the local store is first fetched
        from beside the routing document, and imported only if its archive has ``archive_sha256``.
        """
        location = SETTINGS.routing_location
        if objectstore.is_url(location):
            try:
                bentoml.models.get(tag)
            except NotFound:
                if archive_sha256 is None:
                    raise routing.RoutingRefused("no_digest", f"model {tag} must be fetched but its slot names "
                                                 "no archive_sha256") from None
                logger.info("model %s not in the local store: fetching it from %s", tag, location)
                archives.fetch(str(location), tag, archive_sha256)
        return load_served_model(tag, CONTRACT, use_replay=SETTINGS.scorer == "auto",
                                 expected_sha256=expected_sha256)

    def _load_routing(self, path: str | Path, current: Serving | None) -> Serving:
        """Read the routing document, check it can be trusted, and load its models, reusing
        those already served with the same digest (RoutingRefused on a failed trust check)."""
        document = routing.check_trusted(routing.read_routing(path), ROUTING_VERIFY_KEY, objectstore.is_url(path))
        loaded = {(m.tag, m.sha256): m for m, _ in current.roles()} if current is not None else {}

        def get(slot: dict[str, Any] | None) -> ServedModel | None:
            if slot is None:
                return None
            tag, digest = slot["model_tag"], slot["model_sha256"]
            try:
                return loaded.get((tag, digest)) or self._load(tag, digest, slot.get("archive_sha256"))
            except ModelDigestMismatch as exc:
                raise routing.RoutingRefused("model_sha256", str(exc)) from None

        return Serving(get(document["champion"]), get(document["challenger"]),
                       float(document["canary_share"]))

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
        if self.routing_path is not None:
            self.watcher = asyncio.create_task(self._watch(self.routing_path, SETTINGS.routing_poll_seconds),
                                               name="routing-watcher")

    async def _watch(self, path: str | Path, interval: float) -> None:
        """Reload whenever the routing document changes; a failure never stops the watching.

        A failed reload is retried, backing off up to :data:`MAX_RELOAD_BACKOFF_S`, until it
        succeeds (a model that reaches the store a moment after the document is picked up), with
        one log line per failure streak; a document that disappears is logged once. An object
        store that cannot be reached is polled with the same back-off, logged once when it goes
        away and once when it is back; the current models serve meanwhile. A document refused by a
        trust check (:class:`~mlops_template.serving.routing.RoutingRefused`) is logged and counted
        once and not retried: the current models serve until a trusted document replaces it.
        """
        failures, missing, failed_signature, retry_at = 0, False, None, 0.0
        loop = asyncio.get_running_loop()
        outage: float | None = None  # when the store stopped answering
        unreachable = 0
        while True:
            await asyncio.sleep(min(interval * 2 ** unreachable, MAX_RELOAD_BACKOFF_S))
            try:
                signature = await loop.run_in_executor(self.loader, routing.document_signature, path)
            except StoreUnavailable as exc:
                if outage is None:
                    outage = time.monotonic()
                    self.metrics.reload_failures.inc()
                    logger.error("routing document %s unreachable (%s): current models kept; retrying "
                                 "with back-off", path, exc)
                unreachable += 1
                continue
            if outage is not None:
                logger.info("routing document %s reachable again after %.0f s", path, time.monotonic() - outage)
                outage, unreachable = None, 0
            if signature is None:
                if not missing:
                    logger.warning("routing file %s is gone: current models kept until it returns", path)
                missing = True
                continue
            missing = False
            if signature == self.routing_signature or (
                    signature == failed_signature and time.monotonic() < retry_at):
                continue
            try:
                await self._reload(path)
            except routing.RoutingRefused as exc:
                self._refused(path, exc)
                self.metrics.reload_failures.inc()
                logger.error("routing document %s refused (%s: %s): current models kept until a trusted "
                             "document replaces it", path, exc.reason, exc)
                self.routing_signature, failures, failed_signature = signature, 0, None
                continue
            except Exception as exc:
                if signature != failed_signature:  # counted and logged once per routing document
                    self.metrics.reload_failures.inc()
                    logger.error("routing reload from %s failed (%s: %s): current models kept; retrying",
                                 path, type(exc).__name__, exc)
                    failures = 0
                failures, failed_signature = failures + 1, signature
                retry_at = time.monotonic() + min(interval * 2 ** failures, MAX_RELOAD_BACKOFF_S)
                continue
            if failed_signature == signature:
                logger.info("routing reload from %s succeeded after %d failed attempt(s)", path, failures)
            self.routing_signature, failures, failed_signature = signature, 0, None

    async def _reload(self, path: str | Path) -> None:
        """Load the routing file's models off the loop, swap them in, retire replaced ones."""
        current = self.serving
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        serving = await loop.run_in_executor(self.loader, self._load_routing, path, current)
        self._activate(serving)
        self.serving = serving  # the swap: one reference assignment
        self.routing_refused = None
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

    def score_rows(self, model: ServedModel, rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
        """Score validated records (dicts) in one call; record latency and prediction metrics."""
        started = time.perf_counter()
        proba = model.scorer.predict_proba(rows)[:, model.positive_index]
        labels = np.where(proba >= model.threshold, model.positive, model.negative)
        self.metrics.scored(model.version, time.perf_counter() - started, proba, labels)
        return list(zip(proba.tolist(), labels.tolist(), strict=True))

    @staticmethod
    def inference_entries(request_id: str, model_version: str, rows: list[dict[str, Any]],
                          results: list[tuple[float, str]], client_request_id: str | None = None,
                          ) -> list[dict[str, Any]]:
        """One inference-log entry per scored record, with the record as the client sent it.

        ``request_id`` is the service's own (unique) id; the client's, if any, is kept apart.
        """
        client = {"client_request_id": client_request_id} if client_request_id is not None else {}
        return [
            {"request_id": request_id, "record_index": index, "model_version": model_version,
             "features": row, "probability": probability, "label": label, **client}
            for index, (row, (probability, label)) in enumerate(zip(rows, results, strict=True))
        ]

    async def _score_on(self, model: ServedModel, rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
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
            isolation = Isolation(functools.partial(self.score_rows, model), self.executor, CONTROL_ROWS,
                                  self.metrics.isolated)
            verdict = (await isolation.judge([(rows, exc)], others_scored=False))[0]
            if verdict is exc:
                raise
            raise verdict from exc

    @bentoml.api
    async def predict(self, records: RecordList, ctx: bentoml.Context) -> list[Prediction]:
        """Score a list of records; concurrent requests share one vectorised model call."""
        serving = self.serving  # one snapshot: a reload meanwhile does not affect this request
        if serving is None:
            raise ServiceUnavailable("model failed its integrity check")
        request_id = _request_id(ctx)
        model = serving.pick(_routing_key(ctx, request_id))
        rows = RECORDS.dump_python(records, exclude_unset=True)
        try:
            results = await self._score_on(model, rows)
        except InputError as exc:  # this request's own records, not the service: 422, batchmates unharmed
            logger.info("request %s: not scored by %s (422): %s", request_id, model.tag, exc)
            ctx.response.status_code = 422  # BentoML applies the context's status to any answer
            return JSONResponse({"error": "unscorable", "request_id": request_id, "message": str(exc),
                                 "details": [{"record": exc.record, "field": None, "message": str(exc)}]},
                                status_code=422)
        except Exception:
            self.metrics.answered(model.version, "error")
            logger.exception("request %s: scoring with %s failed", request_id, model.tag)
            raise InternalServerError("scoring failed") from None
        self.metrics.answered(model.version, "success")
        if self.inference_log is not None:
            self.inference_log.submit(self.inference_entries(request_id, model.version, rows,
                                                             results, _client_request_id(ctx)))
        return [Prediction(probability=probability, label=label, model_version=model.version)
                for probability, label in results]


def declare_json_responses(service: Any) -> None:
    """Fix the media type of every API's answer to JSON, once.

    BentoML otherwise derives the media type of a list answer from its JSON schema, which it
    rebuilds on every response, on the event loop: a large share of a constant endpoint's time
    under load.
    """
    for api in service.apis.values():
        api.output_spec.media_type = "application/json"


declare_json_responses(PredictionService)
# Added first, so outermost: a request without a valid key is refused before the guard reads its body.
PredictionService.add_asgi_middleware(ApiKeyAuth, keys_file=SETTINGS.api_keys_file, runtime=GUARD_RUNTIME)
PredictionService.add_asgi_middleware(RequestGuard, settings=guard_settings(),
                                      runtime=GUARD_RUNTIME)


def document_openapi(service: Any) -> None:
    """Make the OpenAPI document BentoML publishes (``/docs.json``, the bento's ``openapi.yaml``)
    say what the request guard enforces, once.

    BentoML rebuilds the document from the API signature whenever it is asked for and offers no
    hook: the service object is given a subclass of its own class whose ``openapi_spec`` completes
    BentoML's document with :func:`~mlops_template.serving.schema.document_predict` (required body,
    no extra top-level fields, the guard's error answers) and
    :func:`~mlops_template.serving.schema.document_readyz`.
    """
    import attrs
    from bentoml._internal.utils.cattr import bentoml_cattr

    from mlops_template.serving.guard import ERROR_CODES, READYZ_PATH
    from mlops_template.serving.schema import SERVICE_ERROR_CODES, document_predict, document_readyz

    api_name = next(name for name, api in service.apis.items() if api.route == PREDICT_PATH)

    class DocumentedService(type(service)):
        __slots__ = ()  # the same layout as BentoML's (slotted) Service, so the class can be swapped

        @property
        def openapi_spec(self) -> Any:
            spec = super().openapi_spec
            schemas = spec.components["schemas"]
            input_schema = f"{api_name}__Input"
            if input_schema in schemas:
                schemas[input_schema] = bentoml_cattr.unstructure(schemas[input_schema])
            predict = spec.paths[PREDICT_PATH]
            operation = bentoml_cattr.unstructure(predict.post)
            document_predict(operation, schemas, {**ERROR_CODES, **SERVICE_ERROR_CODES}, input_schema)
            spec.paths[PREDICT_PATH] = attrs.evolve(predict, post=operation)
            if READYZ_PATH in spec.paths:
                readyz = spec.paths[READYZ_PATH]
                probe = bentoml_cattr.unstructure(readyz.get)
                document_readyz(probe, schemas)
                spec.paths[READYZ_PATH] = attrs.evolve(readyz, get=probe)
            return spec

    service.__class__ = DocumentedService


document_openapi(PredictionService)
