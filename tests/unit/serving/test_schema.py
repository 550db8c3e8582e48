"""The request model built from the contract refuses every number the model cannot take."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mlops_template.core.contract import contract_from_dict
from mlops_template.serving.schema import request_models

# A drafted contract: numeric bounds left open, as onboarding writes them.
OPEN_BOUNDS = contract_from_dict({
    "name": "drafted",
    "target": {"column": "y", "positive": "yes"},
    "columns": {
        "count": {"type": "int", "role": "numeric"},
        "ratio": {"type": "float", "role": "numeric", "nullable": True},
        "kind": {"type": "str", "role": "categorical", "allowed": ["a", "b"]},
        "y": {"type": "str", "role": "target", "allowed": ["yes", "no"]},
    },
})
HUGE = 10 ** 400  # parses as a Python int; float(HUGE) overflows


def errors_of(body: str) -> list[dict]:
    _, _, request = request_models(OPEN_BOUNDS, ["count", "ratio", "kind"], 10)
    with pytest.raises(ValidationError) as caught:
        request.model_validate(json.loads(body))
    return caught.value.errors(include_url=False)


def test_an_integer_beyond_float64_is_refused_naming_record_and_field() -> None:
    body = json.dumps({"records": [{"count": 1, "kind": "a"}, {"count": HUGE, "kind": "b"}]})
    [error] = errors_of(body)
    assert error["loc"] == ("records", 1, "count")
    assert "float64" in error["msg"]


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["count", "ratio"])
def test_non_finite_numbers_are_refused_in_every_numeric_column(field: str, literal: str) -> None:
    record = '{"count": 1, "ratio": 0.5, "kind": "a"}'.replace(f'"{field}": ' + ("1" if field == "count" else "0.5"),
                                                               f'"{field}": {literal}')
    [error] = errors_of('{"records": [' + record + "]}")
    assert error["loc"] == ("records", 0, field)


def test_large_but_finite_numbers_are_still_admitted() -> None:
    """Open bounds stay open: only what float64 cannot hold is refused."""
    _, _, request = request_models(OPEN_BOUNDS, ["count", "ratio", "kind"], 10)
    largest = int(1.7e308)
    parsed = request.model_validate({"records": [{"count": largest, "ratio": -1.7e308, "kind": "a"},
                                                 {"count": -(10 ** 300), "kind": "b"}]})
    assert parsed.records[0].count == largest and parsed.records[1].count == -(10 ** 300)
