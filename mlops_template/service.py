"""The BentoML service: validates records against the contract and scores them with the model.

How the service finds its model, in order:

1. the ``model_tag`` bento argument that :func:`mlops_template.packaging.package_model` writes
   into the bento, so a served bento always uses the exact model it was built (and shipped) with;
2. the ``MODEL_TAG`` environment variable, when run outside a bento (``bentoml serve
   mlops_template.service:PredictionService``);
3. ``<MODEL_NAME>:latest`` from the BentoML model store (``MODEL_NAME`` defaults to
   ``adult-income``).

That model's contract defines the request schema. With ``ROUTING_FILE`` set, the models that
score are instead the routing file's champion and challenger (see :mod:`mlops_template.routing`),
loaded by tag from the same store and verified the same way. The file is polled for changes;
new models load off the request path and replace the old ones in one reference assignment, so
requests in flight finish on the model they started with and none fails. A file or model that
fails to load keeps the current models (``model_routing_reload_failures_total``). With a
challenger, a request goes to it when the hash of its routing key (``X-Routing-Key``, else the
request id) falls under ``canary_share`` (:func:`mlops_template.routing.routes_to_challenger`);
all records of one request go to the same model, and its answers name that model's version.

Every scored record is appended to the inference log (:mod:`mlops_template.inference_log`)
without ever slowing or failing the request; dropped entries are counted in
``model_inference_log_dropped_total``.

The model directory holds the contract, so the request model (``Record``) is built from the
same declaration that validated the training data. The sklearn pipeline is loaded only after
its sha256 is verified: a tampered model leaves the service running but not ready (``/readyz``
answers 503 and ``/predict`` answers 503) instead of serving it.

A request passes through :class:`~mlops_template.request_guard.RequestGuard` (size, content
type, JSON, contract validation, concurrency limit; every refusal is a small JSON 4xx/503) before
``predict``, which hands its rows to a :class:`~mlops_template.microbatch.MicroBatcher` so that
concurrent requests are scored in one vectorised call. A batch is scored by the numpy replay of
the fitted pipeline (:mod:`mlops_template.scoring`, a few milliseconds, run on the event loop)
when the replay passed its check against the pipeline at load time, else by the sklearn
pipeline on a scoring thread. Metrics are in :mod:`mlops_template.service_metrics`.

Settings, all from the environment (read when the service is imported or started):

========================  =============  ====================================================================
``MAX_RECORDS``           1000           records per request (more: 400 ``too_many_records``)
``MAX_BODY_BYTES``        1048576        request body size (more: 413 ``body_too_large``, not read in full)
``MAX_CONCURRENCY``       64             ``/predict`` requests in progress per worker (more: fast 503)
``REQUEST_TIMEOUT``       10             seconds before BentoML answers 504 (``traffic.timeout``)
``WORKERS``               1              worker processes
``BATCHING``              on             ``off`` scores each request on its own (for benchmarks)
``BATCH_MAX_RECORDS``     1000           most records scored in one model call
``BATCH_WAIT_MS``         1              how long a batch waits for more requests once the first arrived
``OMP_NUM_THREADS``       (1)            native (OpenMP/BLAS) threads per worker; unset: one
``SCORER``                auto           ``auto``: the numpy replay of the pipeline when it passes its check
                                         (:mod:`mlops_template.scoring`); ``pipeline``: always sklearn
``LOG_PAYLOADS``          false          ``true`` logs every accepted request body (off: no payloads in logs)
``INFERENCE_LOG_DIR``     inference-log  inference-log directory, relative to the working directory
                                         (``bentoml serve TAG`` runs in the bento's dir); empty: no log
``INFERENCE_LOG``         on             ``off`` disables the inference log
``ROUTING_FILE``          (unset)        routing JSON naming champion/challenger (unset: the pinned model)
``ROUTING_POLL_SECONDS``  1              how often the routing file is checked for changes
========================  =============  ====================================================================
"""

import asyncio
import functools
import gc
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import bentoml
import numpy as np
from bentoml.exceptions import InternalServerError, ServiceUnavailable
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictStr,
    TypeAdapter,
    create_model,
)

from mlops_template import routing
from mlops_template.contract import ColumnSpec, Contract, load_contract
from mlops_template.features import FeatureSpec
from mlops_template.inference_log import InferenceLog
from mlops_template.microbatch import MicroBatcher
from mlops_template.request_guard import GuardRuntime, GuardSettings, RequestGuard, install_log_filter
from mlops_template.scoring import ModelScorer
from mlops_template.service_metrics import service_metrics

logger = logging.getLogger(__name__)
# BentoML's server logging passes only warnings from loggers it does not know; the package's own
# lines (which model serves, how it scores, routing reloads) are wanted in the server log. Nothing
# may log at import time: BentoML caches the worker name of its log lines on the first line.
logging.getLogger("mlops_template").setLevel(logging.INFO)

DEFAULT_MODEL_NAME = "adult-income"
DEFAULT_MAX_RECORDS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1000 full records take about 350 kB
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_BATCH_WAIT_MS = 1.0
DEFAULT_INFERENCE_LOG_DIR = "inference-log"
DEFAULT_ROUTING_POLL_SECONDS = 1.0
GC_THRESHOLDS = (20_000, 100, 100)  # Python's default is (700, 10, 10)
RETIRE_DRAIN_SECONDS = 30.0  # a replaced model's batcher answers its queued requests first
PREDICT_PATH = "/predict"

# Files inside the BentoML model directory, written by mlops_template.packaging.
MODEL_FILE = "model.skops"
FEATURE_SPEC_FILE = "feature_spec.json"
CONTRACT_FILE = "contract.yaml"
SERVING_FILE = "serving.json"


def model_reference() -> str:
    """The model tag to serve: bento argument, else ``MODEL_TAG``, else ``MODEL_NAME:latest``."""
    pinned = getattr(bentoml.use_arguments(), "model_tag", None)
    if pinned:
        return str(pinned)
    if os.environ.get("MODEL_TAG"):
        return os.environ["MODEL_TAG"]
    return f"{os.environ.get('MODEL_NAME', DEFAULT_MODEL_NAME)}:latest"


def _env_number(name: str, default: float, kind: type = int) -> Any:
    """A positive number from the environment, failing loudly at startup on a bad value."""
    value = kind(os.environ.get(name, default))
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _env_flag(name: str, default: bool) -> bool:
    """A boolean from the environment: true/1/yes/on or false/0/no/off."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if raw.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def max_records() -> int:
    """Most records accepted in one request (``MAX_RECORDS``), bounding memory and latency."""
    return _env_number("MAX_RECORDS", DEFAULT_MAX_RECORDS)


def _reject_text(value: Any) -> Any:
    """Refuse strings and booleans for numeric fields, which pydantic would otherwise coerce."""
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("must be a JSON number")
    return value


def _field_type(column: ColumnSpec) -> Any:
    """The pydantic type of one contract column, with its range or allowed values."""
    # Bounds before the BeforeValidator: pydantic then constrains the inner number and publishes
    # them as OpenAPI minimum/maximum (after it, the schema says "ge"/"le", which clients ignore).
    bounds = Field(ge=column.min, le=column.max)
    if column.type == "int":
        # Lax int still accepts 3.0 and rejects 3.5 and NaN; text and booleans are refused first.
        return Annotated[int, bounds, BeforeValidator(_reject_text)]
    if column.type == "float":
        return Annotated[FiniteFloat, bounds, BeforeValidator(_reject_text)]
    if column.allowed is not None:
        return Literal[tuple(column.allowed)]
    return StrictStr


def build_record_model(contract: Contract, used: list[str] | None = None) -> type[BaseModel]:
    """A pydantic model of one input record, generated from the contract's input columns.

    A field is required when the model uses the column (``used``; default: every input column)
    and the contract does not allow nulls there. Nullable fields and columns the model does not
    use may be omitted (read as null); when sent they are still checked against the contract.
    """
    required = set(contract.column_names if used is None else used)
    fields: dict[str, Any] = {}
    for column in contract.input_columns:
        field_type = _field_type(column)
        if column.nullable or column.name not in required:
            fields[column.name] = (Optional[field_type], Field(default=None))
        else:
            fields[column.name] = (field_type, Field(...))
    return create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)


class Prediction(BaseModel):
    """The model's answer for one record."""

    probability: float = Field(description="probability of the contract's positive class")
    label: str = Field(description="positive class when probability >= threshold, else negative")
    model_version: str


# Located and read at import: the request model must exist before the service class is defined.
# Models served through the routing file are expected to share this contract and feature columns.
_STORED_MODEL = bentoml.models.get(model_reference())
MODEL_DIR = Path(_STORED_MODEL.path)
CONTRACT = load_contract(MODEL_DIR / CONTRACT_FILE)
Record = build_record_model(CONTRACT, FeatureSpec.from_json(MODEL_DIR / FEATURE_SPEC_FILE).source_columns)
RecordList = Annotated[list[Record], Field(min_length=1, max_length=max_records())]
RECORDS = TypeAdapter(RecordList)
PredictRequest = create_model("PredictRequest", __config__=ConfigDict(extra="forbid"),
                              records=(RecordList, Field(...)))
# Filled in by each worker's service instance; read by that worker's RequestGuard.
GUARD_RUNTIME = GuardRuntime()


def guard_settings() -> GuardSettings:
    """The request guard's limits, from the environment."""
    return GuardSettings(
        path=PREDICT_PATH,
        request_model=PredictRequest,
        max_body_bytes=_env_number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        max_records=max_records(),
        max_concurrency=_env_number("MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY),
        log_payloads=_env_flag("LOG_PAYLOADS", False),
    )


def _positive_index(classes: np.ndarray, positive: str) -> int:
    """Column of ``predict_proba`` that holds the positive class (string or 0/1 targets)."""
    as_text = [str(c) for c in classes]
    if positive in as_text:
        return as_text.index(positive)
    if set(as_text) <= {"0", "1", "False", "True"} and len(as_text) == 2:
        return 1
    raise ValueError(f"model classes {as_text} do not include {positive!r}")


def _request_id(ctx: bentoml.Context) -> str:
    """The id the request guard gave this request (``-`` when called without the guard)."""
    return str(getattr(ctx.request.state, "request_id", "-"))


def _routing_key(ctx: bentoml.Context, request_id: str) -> str:
    """What the canary split hashes: the ``X-Routing-Key`` header, else the request id."""
    return ctx.request.headers.get("x-routing-key") or request_id


def freeze_startup_objects() -> None:
    """Keep garbage-collector pauses out of request latency.

    A full collection walks every tracked object, and a worker holds millions that live as long
    as it does (BentoML, pydantic, sklearn, the model). ``gc.freeze`` moves them out of the
    collector's view, and :data:`GC_THRESHOLDS` makes collections of what requests allocate
    rarer. Measured with the constant benchmark endpoint at 32 connections, p99 was about 250 ms
    with Python's defaults, 150 ms with the freeze alone, and 71 ms with both (75 ms with the
    collector off).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    logger.info("%d start-up objects frozen out of garbage collection", gc.get_freeze_count())


def limit_native_threads() -> None:
    """One OpenMP/BLAS thread per worker, unless ``OMP_NUM_THREADS`` says otherwise.

    Batches are small, and the event loop, the load balancer's health checks and other workers
    already compete for the cores: with the second core of this 2-core machine busy,
    HistGradientBoosting scored 32 rows in 22.5 ms with its default two threads and in 7.2 ms
    with one. Scale with ``WORKERS`` instead.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def scorer_choice() -> str:
    """``SCORER``: ``auto`` (numpy replay when it passes its check) or ``pipeline`` (sklearn)."""
    choice = os.environ.get("SCORER", "auto").strip().lower()
    if choice not in ("auto", "pipeline"):
        raise ValueError(f"SCORER must be auto or pipeline, got {choice!r}")
    return choice


def inference_log_dir() -> Path | None:
    """The inference-log directory (``INFERENCE_LOG_DIR``), or None when logging is disabled."""
    if not _env_flag("INFERENCE_LOG", True):
        return None
    configured = os.environ.get("INFERENCE_LOG_DIR", DEFAULT_INFERENCE_LOG_DIR)
    return Path(configured).resolve() if configured.strip() else None


@dataclass(eq=False)
class ServedModel:
    """One verified model ready to score, with its micro-batcher (set by the service)."""

    tag: str
    version: str
    sha256: str
    threshold: float
    positive: str
    negative: str
    positive_index: int
    scorer: ModelScorer
    batcher: MicroBatcher | None = None


@dataclass(frozen=True)
class Serving:
    """The models serving right now; replaced as a whole, never modified in place."""

    champion: ServedModel
    challenger: ServedModel | None = None
    canary_share: float = 0.0

    def pick(self, key: str) -> ServedModel:
        """The model that answers a request with routing key ``key``."""
        if self.challenger is not None and routing.routes_to_challenger(key, self.canary_share):
            return self.challenger
        return self.champion

    def roles(self) -> list[tuple[ServedModel, str]]:
        """Each served model with its role, champion first."""
        pairs = [(self.champion, "champion")]
        if self.challenger is not None:
            pairs.append((self.challenger, "challenger"))
        return pairs


def load_served_model(tag: str) -> ServedModel:
    """Load and verify one model from the BentoML store (ModelIntegrityError, NotFound, ...)."""
    from mlops_template.model import load_model

    stored = bentoml.models.get(tag)
    model_dir = Path(stored.path)
    serving = json.loads((model_dir / SERVING_FILE).read_text(encoding="utf-8"))
    pipeline = load_model(model_dir / MODEL_FILE)
    positive = str(serving["positive_class"])
    spec = FeatureSpec.from_json(model_dir / FEATURE_SPEC_FILE)
    scorer = ModelScorer(pipeline, spec, CONTRACT, use_replay=scorer_choice() == "auto")
    logger.info("model %s scores with %s", stored.tag, scorer.describe())
    return ServedModel(
        tag=str(stored.tag),
        version=str(serving.get("model_version") or stored.tag.version),
        sha256=str(stored.info.metadata.get("sha256", "")),
        threshold=float(serving["threshold"]),
        positive=positive,
        negative=str(serving["negative_class"]),
        positive_index=_positive_index(pipeline.classes_, positive),
        scorer=scorer,
    )


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the routing file is rewritten (atomic renames change the inode)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


@bentoml.service(
    traffic={"timeout": _env_number("REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT, float)},
    workers=_env_number("WORKERS", 1),
)
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
        self.batching = _env_flag("BATCHING", True)
        self.routing_path = Path(os.environ[routing.ENV_VAR]) if os.environ.get(
            routing.ENV_VAR) else None
        self.routing_signature: tuple[int, int, int] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.serving: Serving | None = self._initial_serving()
        if self.serving is not None:
            self._activate(self.serving)
        self.inference_log = self._open_inference_log()
        GUARD_RUNTIME.metrics = self.metrics
        GUARD_RUNTIME.is_ready = self.__is_ready__
        install_log_filter()
        logger.info("ready=%s, batching=%s, routing=%s, inference log=%s", self.__is_ready__(),
                    self.batching, self.routing_path,
                    self.inference_log.directory if self.inference_log else None)

    def __is_ready__(self) -> bool:
        """Ready only when a verified model is loaded (drives ``/readyz``)."""
        return self.serving is not None

    def _initial_serving(self) -> Serving | None:
        """The routing file's models if one is configured and loads, else the pinned model."""
        if self.routing_path is not None:
            self.routing_signature = _file_signature(self.routing_path)
            try:
                return self._load_routing(self.routing_path, None)
            except Exception:
                self.metrics.reload_failures.inc()
                logger.exception("routing file %s unusable at startup: serving the pinned "
                                 "model %s", self.routing_path, _STORED_MODEL.tag)
        try:
            return Serving(load_served_model(str(_STORED_MODEL.tag)))
        except Exception:
            logger.exception("model %s failed its integrity check: not ready", _STORED_MODEL.tag)
            return None

    def _load_routing(self, path: Path, current: Serving | None) -> Serving:
        """Read the routing file and load its models, reusing those already served."""
        document = routing.read_routing(path)
        loaded = {m.tag: m for m, _ in current.roles()} if current is not None else {}

        def get(slot: dict[str, Any] | None) -> ServedModel | None:
            if slot is None:
                return None
            return loaded.get(slot["model_tag"]) or load_served_model(slot["model_tag"])

        return Serving(get(document["champion"]), get(document["challenger"]),
                       float(document["canary_share"]))

    def _activate(self, serving: Serving) -> None:
        """Give new models a batcher and publish which models serve, in which role."""
        for model, _ in serving.roles():
            if model.batcher is None and self.batching:
                model.batcher = MicroBatcher(
                    functools.partial(self.score_rows, model), self._scoring_executor(model),
                    max_records=_env_number("BATCH_MAX_RECORDS", DEFAULT_MAX_RECORDS),
                    max_wait_s=_env_number("BATCH_WAIT_MS", DEFAULT_BATCH_WAIT_MS, float) / 1000,
                )
        self.metrics.serving([(m.version, m.sha256, role) for m, role in serving.roles()])
        logger.info("serving %s", ", ".join(f"{role} {m.tag} (v{m.version})"
                                            for m, role in serving.roles()))

    def _scoring_executor(self, model: ServedModel) -> ThreadPoolExecutor | None:
        """Where a model's batches run: the event loop for the numpy replay, else a thread.

        The replay takes a few milliseconds, less than the GIL hand-offs between the loop and a
        scoring thread cost under load; the sklearn pipeline takes tens of milliseconds, which
        the loop must not stall for.
        """
        return None if model.scorer.replay is not None else self.executor

    def _open_inference_log(self) -> InferenceLog | None:
        """This worker's inference log (created after the fork), or None when disabled."""
        directory = inference_log_dir()
        if directory is None:
            return None
        return InferenceLog(directory, on_drop=self.metrics.log_dropped.inc)

    @bentoml.on_startup
    async def on_worker_start(self) -> None:
        """Freeze start-up objects out of the collector; poll the routing file, if configured."""
        freeze_startup_objects()
        if self.routing_path is not None:
            interval = _env_number("ROUTING_POLL_SECONDS", DEFAULT_ROUTING_POLL_SECONDS, float)
            self.watcher = asyncio.create_task(self._watch(self.routing_path, interval),
                                               name="routing-watcher")

    async def _watch(self, path: Path, interval: float) -> None:
        """Reload whenever the routing file changes; a failure never stops the watching."""
        while True:
            await asyncio.sleep(interval)
            signature = _file_signature(path)
            if signature is None or signature == self.routing_signature:
                continue
            self.routing_signature = signature
            try:
                await self._reload(path)
            except Exception:
                self.metrics.reload_failures.inc()
                logger.exception("routing reload from %s failed: current models kept", path)

    async def _reload(self, path: Path) -> None:
        """Load the routing file's models off the loop, swap them in, retire replaced ones."""
        current = self.serving
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        serving = await loop.run_in_executor(self.loader, self._load_routing, path, current)
        self._activate(serving)
        self.serving = serving  # the swap: one reference assignment
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

    def score_rows(self, model: ServedModel, rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
        """Score validated records (dicts) in one call; record latency and prediction metrics."""
        started = time.perf_counter()
        proba = model.scorer.predict_proba(rows)[:, model.positive_index]
        labels = np.where(proba >= model.threshold, model.positive, model.negative)
        self.metrics.scored(model.version, time.perf_counter() - started, proba, labels)
        return list(zip(proba.tolist(), labels.tolist()))

    @staticmethod
    def inference_entries(request_id: str, model_version: str, rows: list[dict[str, Any]],
                          results: list[tuple[float, str]]) -> list[dict[str, Any]]:
        """One inference-log entry per scored record, with the record as the client sent it."""
        return [
            {"request_id": request_id, "record_index": index, "model_version": model_version,
             "features": row, "probability": probability, "label": label}
            for index, (row, (probability, label)) in enumerate(zip(rows, results))
        ]

    async def _score_on(self, model: ServedModel, rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
        """Score rows with ``model``: through its batcher, or alone on the scoring thread."""
        if model.batcher is not None:
            return await model.batcher.submit(rows)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.score_rows, model, rows)

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
        except Exception:
            self.metrics.answered(model.version, "error")
            logger.exception("request %s: scoring with %s failed", request_id, model.tag)
            raise InternalServerError("scoring failed") from None
        self.metrics.answered(model.version, "success")
        if self.inference_log is not None:
            self.inference_log.submit(self.inference_entries(request_id, model.version, rows,
                                                             results))
        return [Prediction(probability=probability, label=label, model_version=model.version)
                for probability, label in results]


def declare_json_responses(service: Any) -> None:
    """Fix the media type of every API's answer to JSON, once.

    BentoML otherwise derives the media type of a list answer from its JSON schema, which it
    rebuilds on every response: about 0.5 ms of event-loop time per request, measured as a third
    of a constant endpoint's time under load.
    """
    for api in service.apis.values():
        api.output_spec.media_type = "application/json"


declare_json_responses(PredictionService)
PredictionService.add_asgi_middleware(RequestGuard, settings=guard_settings(),
                                      runtime=GUARD_RUNTIME)
