"""The base of every params.yaml section: frozen, unknown keys refused, errors worded as one line each.

:mod:`mlops_template.core.params` holds the sections themselves; :mod:`mlops_template.core.gate_params`
the gate's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ParamsError(ValueError):
    """params.yaml has a wrong key or value, or does not fit the contract; ``problems`` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _describe(where: str, error: Any) -> str:
    """One line for one pydantic error: our validators' own words, else the key and what is wrong."""
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    key = ".".join([where, *(str(part) for part in error["loc"])])
    if error["type"] == "missing":
        return f"{key} is missing: set it in params.yaml"
    return f"{key}: {error['msg']}, got {error['input']!r}"


class Section(BaseModel):
    """A section of params.yaml: frozen, unknown keys refused, ``None`` (an empty section) is ``{}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    KEY: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.KEY} must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown {cls.KEY} keys {unknown}; known: {list(cls.model_fields)}")
        return data

    @classmethod
    def parse(cls, raw: Any) -> Self:
        """The section from its raw mapping (or itself); ParamsError names every wrong key."""
        if isinstance(raw, cls):
            return raw
        try:
            return cls.model_validate({} if raw is None else raw)
        except ValidationError as exc:
            raise ParamsError([_describe(cls.KEY, e) for e in exc.errors()]) from None


def share(value: float, key: str) -> float:
    """``value`` when it lies in [0, 1]; ValueError naming ``key`` otherwise."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be a share between 0 and 1, got {value!r}")
    return value


def finite_number(value: Any, where: str) -> float:
    """``value`` as a float when it is a finite int or float (not a bool); ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def as_mapping(value: Any, where: str) -> dict:
    """``value`` as a dict (None is empty, a model its set fields); ValueError naming ``where`` if not a mapping."""
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}")
    return dict(value)
