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
"""

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import ServiceUnavailable
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, StrictStr
from pydantic import create_model

from mlops_template.contract import ColumnSpec, Contract, load_contract, pandas_dtype
from mlops_template.features import FeatureSpec, build_features

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "adult-income"
DEFAULT_MAX_RECORDS = 1000

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


def max_records() -> int:
    """Most records accepted in one request (``MAX_RECORDS``), bounding memory and latency."""
    return int(os.environ.get("MAX_RECORDS", DEFAULT_MAX_RECORDS))


def _reject_text(value: Any) -> Any:
    """Refuse strings and booleans for numeric fields, which pydantic would otherwise coerce."""
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("must be a JSON number")
    return value


def _field_type(column: ColumnSpec) -> Any:
    """The pydantic type of one contract column, with its range or allowed values."""
    bounds = annotated_types.Interval(ge=column.min, le=column.max)
    if column.type == "int":
        # Lax int still accepts 3.0 and rejects 3.5; text and booleans are refused first.
        return Annotated[int, BeforeValidator(_reject_text), bounds]
    if column.type == "float":
        return Annotated[FiniteFloat, BeforeValidator(_reject_text), bounds]
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
logger.info("serving model %s from %s", _STORED_MODEL.tag, MODEL_DIR)


def _positive_index(classes: np.ndarray, positive: str) -> int:
    """Column of ``predict_proba`` that holds the positive class (string or 0/1 targets)."""
    as_text = [str(c) for c in classes]
    if positive in as_text:
        return as_text.index(positive)
    if set(as_text) <= {"0", "1", "False", "True"} and len(as_text) == 2:
        return 1
    raise ValueError(f"model classes {as_text} do not include {positive!r}")


@bentoml.service
class PredictionService:
    """Scores records with the packaged model; not ready when the model fails its checksum."""

    model_ref = bentoml.models.BentoModel(_STORED_MODEL.tag)

    def __init__(self) -> None:
        """Load the feature spec and, if its checksum holds, the pipeline."""
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

    def __is_ready__(self) -> bool:
        """Ready only when a verified model is loaded (drives ``/readyz``)."""
        return self.pipeline is not None

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Probabilities of the positive class and labels by threshold, for a frame of records."""
        features = build_features(frame.astype(self.dtypes), self.spec)
        proba = self.pipeline.predict_proba(features)[:, self.positive_index]
        labels = np.where(proba >= self.threshold, self.positive, self.negative).tolist()
        return proba, labels

    @bentoml.api
    def predict(self, records: RecordList) -> list[Prediction]:
        """Score a list of records in one vectorised call."""
        if self.pipeline is None:
            raise ServiceUnavailable("model failed its integrity check")
        frame = pd.DataFrame([r.model_dump() for r in records], columns=list(self.dtypes))
        proba, labels = self.score(frame)
        return [
            Prediction(probability=float(p), label=label, model_version=self.model_version)
            for p, label in zip(proba, labels)
        ]
