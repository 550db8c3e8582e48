"""The request and response models of ``/predict``, generated from the data contract.

The contract that validated the training data defines what a record may hold, so a request is
checked against the same declaration (types, ranges, allowed values, nulls) before it is scored.
The answer's model is the task's (:func:`prediction_model`): binary ``probability`` and ``label``,
multiclass ``label`` and ``probabilities`` (one per class), regression ``prediction``.

:func:`document_predict` completes the OpenAPI operation BentoML publishes for ``/predict``
(``/docs.json``) with what the request guard enforces, and :func:`document_readyz` the
``/readyz`` one with its 503 answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictStr,
    TypeAdapter,
    create_model,
)

from mlops_template.core.contract import ColumnSpec, Contract
from mlops_template.core.tasks import Task


def _reject_text(value: Any) -> Any:
    """Refuse strings and booleans for numeric fields, which pydantic would otherwise coerce."""
    if isinstance(value, (str, bytes, bool)):
        raise ValueError("must be a JSON number")
    return value


def _finite_as_float64(value: int) -> int:
    """Refuse an integer the model cannot take: one beyond float64's range (the model computes in
    float64, so such a value would fail the scoring of the whole batch it joined)."""
    try:
        float(value)
    except OverflowError:
        raise ValueError("must be a finite number within float64 range (about 1.8e308)") from None
    return value


def _field_type(column: ColumnSpec) -> Any:
    """The pydantic type of one contract column, with its range or allowed values."""
    # Bounds before the BeforeValidator: pydantic then constrains the inner number and publishes
    # them as OpenAPI minimum/maximum (after it, the schema says "ge"/"le", which clients ignore).
    bounds = Field(ge=column.min, le=column.max)
    if column.type == "int":
        # Lax int still accepts 3.0 and rejects 3.5 and NaN; text and booleans are refused first;
        # an integer too large for float64 is refused after (open bounds admit any size).
        return Annotated[int, bounds, AfterValidator(_finite_as_float64), BeforeValidator(_reject_text)]
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
            fields[column.name] = (field_type | None, Field(default=None))
        else:
            fields[column.name] = (field_type, Field(...))
    return create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)


class Prediction(BaseModel):
    """The model's answer for one record."""

    probability: float = Field(description="probability of the contract's positive class")
    label: str = Field(description="positive class when probability >= threshold, else negative")
    model_version: str


def _class_prediction(task: Task) -> type[BaseModel]:
    classes: Any = Literal[tuple(task.classes)]
    return create_model(
        "Prediction", __doc__="The model's answer for one record: the most probable class.",
        label=(classes, Field(description="the most probable class")),
        probabilities=(dict[classes, float], Field(description="every class's probability (they sum to 1): "
                                                               + ", ".join(task.classes))),
        model_version=(str, Field(...)))


def _value_prediction(task: Task) -> type[BaseModel]:
    return create_model(
        "Prediction", __doc__=f"The model's answer for one record: the predicted {task.target}.",
        prediction=(float, Field(description=f"the predicted value of {task.target!r}")),
        model_version=(str, Field(...)))


# Serving's answer model per task (core.tasks.TASKS): a fourth task adds its builder here.
PREDICTION_MODELS: dict[str, Callable[[Task], type[BaseModel]]] = {
    "binary": lambda task: Prediction, "multiclass": _class_prediction, "regression": _value_prediction}


def prediction_model(task: Task) -> type[BaseModel]:
    """The response model of one record for ``task``: its fields are ``task.answers``' plus
    ``model_version`` (binary: :class:`Prediction`, as before tasks)."""
    if task.name not in PREDICTION_MODELS:
        raise ValueError(f"no response model for task {task.name!r}")
    return PREDICTION_MODELS[task.name](task)


def request_models(contract: Contract, used: list[str], max_records: int) -> tuple[Any, TypeAdapter, type[BaseModel]]:
    """The record list type (the API's parameter), its adapter, and the whole request model."""
    record: Any = build_record_model(contract, used)  # a pydantic model built at run time
    records: Any = Annotated[list[record], Field(min_length=1, max_length=max_records)]
    request = create_model("PredictRequest", __config__=ConfigDict(extra="forbid"), records=(records, Field(...)))
    return records, TypeAdapter(records), request


SCHEMA_REF = "#/components/schemas/{name}"
# Error answers given outside the request guard: the API-key check (serving.auth) and the service
# itself when a request's own records cannot be scored (serving.microbatch.InputError).
SERVICE_ERROR_CODES: dict[int, tuple[str, ...]] = {401: ("unauthorized",), 422: ("unscorable",)}
ERROR_DESCRIPTIONS = {
    400: "Invalid request: a record or field that breaks the contract (`details` names each), too many "
         "records, a body that is not strict UTF-8 JSON, or a repeated Content-Type/Content-Length header",
    408: "The body did not arrive within BODY_TIMEOUT seconds",
    413: "The body is larger than MAX_BODY_BYTES (refused without reading it all)",
    401: "No valid API key (only when API_KEYS_FILE is set): send `Authorization: Bearer <key>`",
    415: "The body is not declared as application/json in UTF-8",
    422: "The contract admits the request but the model cannot score it (`details` names the record); "
         "other requests scored with it are not affected",
    500: "The request could not be scored; quote the request id to report it",
    503: "Not ready (`message` says why) or at capacity: retry after Retry-After seconds",
}
REQUEST_ID_HEADERS = {
    "X-Request-ID": {"description": "The service's own id of this request, unique: quote it with ground truth "
                                    "and in bug reports", "schema": {"type": "string"}},
    "X-Client-Request-ID": {"description": "The client's X-Request-ID, echoed when it is 1-64 characters of "
                                           "[A-Za-z0-9._:-] (never used as the request id)",
                            "schema": {"type": "string"}},
}


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": SCHEMA_REF.format(name=schema_name)}}}


def document_predict(operation: dict[str, Any], schemas: dict[str, Any], error_codes: Mapping[int, Sequence[str]],
                     input_schema: str | None = None) -> None:
    """Complete BentoML's OpenAPI operation of ``/predict`` (a plain dict) in place.

    The request body becomes required and its object refuses extra top-level fields (as the
    guard does; ``input_schema`` names the same schema among the components, patched alike). The
    error answers are the guard's JSON bodies, one schema per status listing its ``error`` codes,
    plus BentoML's own 504 on ``REQUEST_TIMEOUT``; BentoML's 404 (no such answer) goes. Every
    answer of the guard documents its request-id headers.
    """
    body = operation["requestBody"]
    body["required"] = True
    body.setdefault("description", "The records to score, at most maxItems of them")
    for media in body["content"].values():
        media["schema"]["additionalProperties"] = False
    if input_schema is not None and input_schema in schemas:
        schemas[input_schema]["additionalProperties"] = False
    schemas["ErrorDetail"] = {
        "type": "object", "title": "ErrorDetail", "required": ["record", "field", "message"],
        "properties": {"record": {"type": "integer", "nullable": True, "description": "index of the record"},
                       "field": {"type": "string", "nullable": True}, "message": {"type": "string"}},
    }
    responses = operation["responses"]
    responses.pop("404", None)
    responses.pop(404, None)
    ok = responses.pop("200", None) or responses.pop(200)
    documented: dict[str, Any] = {"200": {**ok, "headers": REQUEST_ID_HEADERS}}
    for status, codes in sorted(error_codes.items()):
        name = f"PredictError{status}"
        schemas[name] = {
            "type": "object", "title": name, "required": ["error", "request_id", "message"],
            "properties": {"error": {"type": "string", "enum": list(codes)},
                           "request_id": {"type": "string", "description": "the X-Request-ID of the answer"},
                           "message": {"type": "string"},
                           "details": {"type": "array", "items": {"$ref": SCHEMA_REF.format(name="ErrorDetail")}}},
        }
        headers = dict(REQUEST_ID_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = {"description": "Bearer", "schema": {"type": "string"}}
        if status == 503:
            headers["Retry-After"] = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        documented[str(status)] = {"description": ERROR_DESCRIPTIONS.get(status, "Error"), "headers": headers,
                                   "content": _json(name)}
    schemas["TimeoutAnswer"] = {"type": "object", "title": "TimeoutAnswer", "required": ["error"],
                                "properties": {"error": {"type": "string"}}}
    documented["504"] = {"description": "Not answered within REQUEST_TIMEOUT seconds (BentoML's answer: no "
                                        "request id)", "content": _json("TimeoutAnswer")}
    responses.clear()
    responses.update(documented)


def document_readyz(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add ``/readyz``'s 503 answer, which says why the service is not ready, to its operation."""
    schemas["NotReady"] = {
        "type": "object", "title": "NotReady", "required": ["ready", "reason"],
        "properties": {"ready": {"type": "boolean", "enum": [False]},
                       "reason": {"type": "string", "description": "which model, and why it does not serve"}},
    }
    operation["responses"]["503"] = {"description": "Not ready: no verified model serves", "content": _json("NotReady")}
