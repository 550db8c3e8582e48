"""The BentoML service: validates records against the contract and scores them with the model.

How the service finds its model, in order:

1. the ``model_tag`` bento argument that :func:`mlops_template.packaging.package_model` writes
   into the bento, so a served bento always uses the exact model it was built (and shipped) with;
2. the ``MODEL_TAG`` environment variable, when run outside a bento (``bentoml serve
   mlops_template.service:PredictionService``);
3. ``<MODEL_NAME>:latest`` from the BentoML model store (``MODEL_NAME`` defaults to
   ``adult-income``).

The model directory holds the contract, so the request model (``Record``) is built from the
same declaration that validated the training data. The sklearn pipeline is loaded only after
its sha256 is verified: a tampered model leaves the service running but not ready (``/readyz``
answers 503 and ``/predict`` answers 503) instead of serving it.

A request passes through :class:`~mlops_template.request_guard.RequestGuard` (size, content
type, JSON, contract validation, concurrency limit; every refusal is a small JSON 4xx/503) before
``predict``, which hands its rows to a :class:`~mlops_template.microbatch.MicroBatcher` so that
concurrent requests are scored in one vectorised call. Metrics are in
:mod:`mlops_template.service_metrics`.

Settings, all from the environment (read when the service is imported or started):

==================  ========  ======================================================================
``MAX_RECORDS``     1000      records per request (more: 400 ``too_many_records``)
``MAX_BODY_BYTES``  1048576   request body size (more: 413 ``body_too_large``, not read in full)
``MAX_CONCURRENCY`` 64        ``/predict`` requests in progress per worker (more: fast 503)
``REQUEST_TIMEOUT`` 10        seconds before BentoML answers 504 (``traffic.timeout``)
``WORKERS``         1         worker processes
``BATCHING``        on        ``off`` scores each request on its own (for benchmarks)
``BATCH_MAX_RECORDS`` 1000    most records scored in one model call
``BATCH_WAIT_MS``   1         how long a batch waits for more requests once the first arrived
``LOG_PAYLOADS``    false     ``true`` logs every accepted request body (off: no payloads in logs)
==================  ========  ======================================================================
"""

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import InternalServerError, ServiceUnavailable
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, StrictStr
from pydantic import TypeAdapter, create_model

from mlops_template.contract import ColumnSpec, Contract, load_contract, pandas_dtype
from mlops_template.features import FeatureSpec, build_features
from mlops_template.microbatch import MicroBatcher
from mlops_template.request_guard import GuardRuntime, GuardSettings, RequestGuard
from mlops_template.request_guard import install_log_filter
from mlops_template.service_metrics import service_metrics

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "adult-income"
DEFAULT_MAX_RECORDS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1000 full records take about 350 kB
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_BATCH_WAIT_MS = 1.0
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


def build_record_model(contract: Contract) -> type[BaseModel]:
    """A pydantic model of one input record, generated from the contract's input columns."""
    fields: dict[str, Any] = {}
    for column in contract.input_columns:
        field_type = _field_type(column)
        if column.nullable:
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
_STORED_MODEL = bentoml.models.get(model_reference())
MODEL_DIR = Path(_STORED_MODEL.path)
CONTRACT = load_contract(MODEL_DIR / CONTRACT_FILE)
SERVING = json.loads((MODEL_DIR / SERVING_FILE).read_text(encoding="utf-8"))
Record = build_record_model(CONTRACT)
RecordList = Annotated[list[Record], Field(min_length=1, max_length=max_records())]
RECORDS = TypeAdapter(RecordList)
PredictRequest = create_model("PredictRequest", __config__=ConfigDict(extra="forbid"),
                              records=(RecordList, Field(...)))
# Filled in by each worker's service instance; read by that worker's RequestGuard.
GUARD_RUNTIME = GuardRuntime()
logger.info("serving model %s from %s", _STORED_MODEL.tag, MODEL_DIR)


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


@bentoml.service(
    traffic={"timeout": _env_number("REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT, float)},
    workers=_env_number("WORKERS", 1),
)
class PredictionService:
    """Scores records with the packaged model; not ready when the model fails its checksum."""

    model_ref = bentoml.models.BentoModel(_STORED_MODEL.tag)

    def __init__(self) -> None:
        """Load the feature spec and, if its checksum holds, the pipeline; set up scoring."""
        # Imported here, not at module top: sklearn takes seconds to import, and only the
        # worker needs it, not the supervisor process (or a bento build) that reads the API.
        from mlops_template.model import ModelIntegrityError, load_model

        self.spec = FeatureSpec.from_json(MODEL_DIR / FEATURE_SPEC_FILE)
        self.threshold = float(SERVING["threshold"])
        self.positive = str(SERVING["positive_class"])
        self.negative = str(SERVING["negative_class"])
        self.model_version = str(SERVING.get("model_version") or _STORED_MODEL.tag.version)
        self.dtypes = {c.name: pandas_dtype(c) for c in CONTRACT.input_columns}
        self.pipeline = None
        try:
            self.pipeline = load_model(MODEL_DIR / MODEL_FILE)
            self.positive_index = _positive_index(self.pipeline.classes_, self.positive)
        except (ModelIntegrityError, ValueError):
            self.pipeline = None
            logger.exception("model %s failed its integrity check: not ready", _STORED_MODEL.tag)
        self.metrics = service_metrics(_STORED_MODEL.tag.name, self.model_version,
                                       str(_STORED_MODEL.info.metadata.get("sha256", "")))
        # One scoring thread: model calls never compete with each other for the GIL.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self.batcher: MicroBatcher | None = None
        if _env_flag("BATCHING", True):
            self.batcher = MicroBatcher(
                self.score_rows, self.executor,
                max_records=_env_number("BATCH_MAX_RECORDS", DEFAULT_MAX_RECORDS),
                max_wait_s=_env_number("BATCH_WAIT_MS", DEFAULT_BATCH_WAIT_MS, float) / 1000,
            )
        # Hook for mlops_template.inference_log.InferenceLog (anything with .submit(entries)).
        self.inference_log: Any = None
        GUARD_RUNTIME.metrics = self.metrics
        GUARD_RUNTIME.is_ready = self.__is_ready__
        install_log_filter()
        logger.info("model %s ready=%s, batching=%s", self.model_version, self.__is_ready__(),
                    self.batcher is not None)

    def __is_ready__(self) -> bool:
        """Ready only when a verified model is loaded (drives ``/readyz``)."""
        return self.pipeline is not None

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        """Fail queued requests cleanly and stop the scoring thread."""
        if self.batcher is not None:
            await self.batcher.close()
        self.executor.shutdown(wait=True)

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of the positive class and labels by threshold, for a frame of records."""
        features = build_features(frame.astype(self.dtypes), self.spec)
        proba = self.pipeline.predict_proba(features)[:, self.positive_index]
        labels = np.where(proba >= self.threshold, self.positive, self.negative)
        return proba, labels

    def score_rows(self, rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
        """Score validated records (dicts) in one call; record latency and prediction metrics."""
        started = time.perf_counter()
        frame = pd.DataFrame.from_records(rows, columns=list(self.dtypes))
        proba, labels = self.score(frame)
        self.metrics.scored(time.perf_counter() - started, proba, labels)
        return list(zip(proba.tolist(), labels.tolist()))

    def inference_entries(self, request_id: str, rows: list[dict[str, Any]],
                          results: list[tuple[float, str]]) -> list[dict[str, Any]]:
        """One inference-log entry per scored record, with the record as the client sent it."""
        return [
            {"request_id": request_id, "model_version": self.model_version, "index": index,
             "record": row, "probability": probability, "label": label}
            for index, (row, (probability, label)) in enumerate(zip(rows, results))
        ]

    @bentoml.api
    async def predict(self, records: RecordList, ctx: bentoml.Context) -> list[Prediction]:
        """Score a list of records; concurrent requests share one vectorised model call."""
        if self.pipeline is None:
            raise ServiceUnavailable("model failed its integrity check")
        request_id = _request_id(ctx)
        rows = RECORDS.dump_python(records, exclude_unset=True)
        try:
            if self.batcher is not None:
                results = await self.batcher.submit(rows)
            else:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self.executor, self.score_rows, rows)
        except Exception:
            logger.exception("request %s: scoring failed", request_id)
            raise InternalServerError("scoring failed") from None
        if self.inference_log is not None:
            self.inference_log.submit(self.inference_entries(request_id, rows, results))
        return [Prediction(probability=probability, label=label, model_version=self.model_version)
                for probability, label in results]


PredictionService.add_asgi_middleware(RequestGuard, settings=guard_settings(),
                                      runtime=GUARD_RUNTIME)
