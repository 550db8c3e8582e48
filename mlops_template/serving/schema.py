"""The request and response models of ``/predict``, generated from the data contract.

The contract that validated the training data defines what a record may hold, so a request is
checked against the same declaration (types, ranges, allowed values, nulls) before it is scored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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

from mlops_template.core.contract import ColumnSpec, Contract


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
            fields[column.name] = (field_type | None, Field(default=None))
        else:
            fields[column.name] = (field_type, Field(...))
    return create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)


class Prediction(BaseModel):
    """The model's answer for one record."""

    probability: float = Field(description="probability of the contract's positive class")
    label: str = Field(description="positive class when probability >= threshold, else negative")
    model_version: str


def request_models(contract: Contract, used: list[str], max_records: int) -> tuple[Any, TypeAdapter, type[BaseModel]]:
    """The record list type (the API's parameter), its adapter, and the whole request model."""
    record = build_record_model(contract, used)
    records = Annotated[list[record], Field(min_length=1, max_length=max_records)]
    request = create_model("PredictRequest", __config__=ConfigDict(extra="forbid"), records=(records, Field(...)))
    return records, TypeAdapter(records), request
