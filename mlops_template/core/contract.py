"""The data contract: one declaration of the columns a dataset must have.

The contract is a YAML file (see ``contracts/adult.yaml``). The validate stage turns it into a
pandera schema, the service turns it into a pydantic request model, and monitoring reads the
column roles from it. :mod:`mlops_template.pipeline.inference` drafts one for a new dataset
(``python -m mlops_template contract infer data.csv --target COL``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROLES = ("numeric", "categorical", "target", "ignore")
TASKS = ("binary", "multiclass", "regression")
TYPES = ("int", "float", "str")


class ContractError(ValueError):
    """The contract file itself is malformed."""


@dataclass(frozen=True)
class ColumnSpec:
    """What one column may hold."""

    name: str
    type: str
    role: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class Contract:
    """Columns, target and read rules of a dataset."""

    name: str
    columns: tuple[ColumnSpec, ...]
    target: str
    positive_class: str | None   # binary only: the class a positive answer means
    na_values: tuple[str, ...] = ()
    strip_whitespace: bool = False
    unique_rows: bool = False
    description: str = ""
    task: str = "binary"         # binary | multiclass | regression (mlops_template.core.tasks)
    classes: tuple[str, ...] = ()   # classification: every class, in the order answers list them
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def column_names(self) -> list[str]:
        """All columns, target included, in declaration order."""
        return [c.name for c in self.columns]

    @property
    def input_columns(self) -> list[ColumnSpec]:
        """Columns a client sends for scoring: everything but the target."""
        return [c for c in self.columns if c.role != "target"]

    def columns_with_role(self, role: str) -> list[str]:
        """Names of the columns declared with ``role`` (numeric, categorical, ...)."""
        return [c.name for c in self.columns if c.role == role]

    @property
    def target_spec(self) -> ColumnSpec:
        """The target column's declaration."""
        return next(c for c in self.columns if c.name == self.target)

    @property
    def negative_class(self) -> str:
        """Binary: the label of a negative prediction: the other allowed value, else ``not <positive>``."""
        others = [v for v in self.target_spec.allowed or () if v != self.positive_class]
        return others[0] if len(others) == 1 else f"not {self.positive_class}"

    @property
    def is_binary(self) -> bool:
        """Whether the task is binary classification (a positive class, a threshold)."""
        return self.task == "binary"


def _parse_column(name: str, spec: dict[str, Any]) -> ColumnSpec:
    unknown = set(spec) - {"type", "role", "nullable", "min", "max", "allowed", "description"}
    if unknown:
        raise ContractError(f"column {name!r}: unknown keys {sorted(unknown)}")
    ctype = spec.get("type")
    role = spec.get("role")
    if ctype not in TYPES:
        raise ContractError(f"column {name!r}: type must be one of {TYPES}, got {ctype!r}")
    if role not in ROLES:
        raise ContractError(f"column {name!r}: role must be one of {ROLES}, got {role!r}")
    allowed = spec.get("allowed")
    if allowed is not None and ctype != "str":
        raise ContractError(f"column {name!r}: 'allowed' is only for str columns")
    if ctype == "str" and (spec.get("min") is not None or spec.get("max") is not None):
        raise ContractError(f"column {name!r}: 'min'/'max' are only for numeric columns")
    return ColumnSpec(
        name=name,
        type=ctype,
        role=role,
        nullable=bool(spec.get("nullable", False)),
        min=spec.get("min"),
        max=spec.get("max"),
        allowed=tuple(str(v) for v in allowed) if allowed is not None else None,
        description=spec.get("description", ""),
    )


def _task_of(target: dict[str, Any], spec: ColumnSpec) -> tuple[str, str | None, tuple[str, ...]]:
    """Task, positive class and classes the ``target`` block declares, checked against the column."""
    unknown = set(target) - {"column", "positive", "task"}
    if unknown:
        raise ContractError(f"target: unknown keys {sorted(unknown)} (known: column, positive, task)")
    task = str(target.get("task", "binary"))
    if task not in TASKS:
        raise ContractError(f"target.task must be one of {TASKS}, got {task!r}")
    positive = target.get("positive")
    if task == "binary":
        if positive is None:
            raise ContractError("contract lacks a required key: 'positive' (target.positive, the binary task's "
                                "positive class)")
        classes = tuple(spec.allowed) if spec.allowed is not None else ()
        if classes and len(classes) != 2:
            raise ContractError(f"a binary target allows exactly two values, {spec.name!r} allows {list(classes)}")
        return task, str(positive), classes
    if positive is not None:
        raise ContractError(f"target.positive is for the binary task only, not {task}")
    if task == "multiclass":
        if spec.allowed is None or len(spec.allowed) < 3:
            raise ContractError(f"a multiclass target lists its classes (3 or more) under 'allowed': {spec.name!r} "
                                f"has {list(spec.allowed or [])}")
        return task, None, tuple(spec.allowed)
    if spec.type not in ("int", "float"):
        raise ContractError(f"a regression target is numeric (type int or float), {spec.name!r} is {spec.type}")
    return task, None, ()


def contract_from_dict(raw: dict[str, Any]) -> Contract:
    """Build a contract from its parsed YAML form, checking that it is coherent."""
    try:
        columns = tuple(_parse_column(n, s or {}) for n, s in raw["columns"].items())
        target = raw["target"]["column"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ContractError(f"contract lacks a required key: {exc}") from exc
    by_name = {c.name: c for c in columns}
    if target not in by_name:
        raise ContractError(f"target column {target!r} is not declared under 'columns'")
    if by_name[target].role != "target":
        raise ContractError(f"target column {target!r} must have role 'target'")
    if [c.name for c in columns if c.role == "target"] != [target]:
        raise ContractError("exactly one column must have role 'target'")
    task, positive, classes = _task_of(raw["target"], by_name[target])
    if positive is not None and classes and positive not in classes:
        raise ContractError(f"positive class {positive!r} is not among {list(classes)}")
    read = raw.get("read", {}) or {}
    return Contract(
        name=str(raw.get("name", "model")),
        description=str(raw.get("description", "")),
        columns=columns,
        target=target,
        positive_class=positive,
        na_values=tuple(str(v) for v in read.get("na_values", ())),
        strip_whitespace=bool(read.get("strip_whitespace", False)),
        unique_rows=bool(raw.get("unique_rows", False)),
        task=task,
        classes=classes,
        raw=raw,
    )


def load_contract(path: str | Path) -> Contract:
    """Read and check a contract YAML file."""
    with open(path, encoding="utf-8") as fh:
        return contract_from_dict(yaml.safe_load(fh))


def read_raw_csv(path: str | Path, contract: Contract) -> pd.DataFrame:
    """Read a raw CSV as strings, applying only the contract's read rules.

    Every cell stays a string (or NA) so that type coercion, and its failures, happen in the
    schema where they are reported per row rather than aborting the read.
    """
    return apply_read_rules(pd.read_csv(path, **csv_read_options(contract)), contract)


def csv_read_options(contract: Contract) -> dict[str, Any]:
    """``pd.read_csv`` keyword arguments of the contract's read rules: every cell a string (or NA).

    Shared by :func:`read_raw_csv` and readers that add their own (batch scoring's ``chunksize``).
    """
    return {"dtype": str, "na_values": list(contract.na_values), "keep_default_na": False,
            "skipinitialspace": contract.strip_whitespace}


def apply_read_rules(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Header names stripped; with ``strip_whitespace``, text cells stripped and bare NA markers made NA.

    Only text columns are stripped, so a typed frame (a parquet file's) gets the same rules.
    """
    frame.columns = [str(c).strip() for c in frame.columns]
    if contract.strip_whitespace:
        for column in frame.columns:
            if pd.api.types.is_string_dtype(frame[column]):
                frame[column] = frame[column].str.strip()
        # A cell holding only a marker plus spaces ("? ") is still a missing value.
        frame = frame.replace(list(contract.na_values), pd.NA) if contract.na_values else frame
    return frame


def pandas_dtype(column: ColumnSpec) -> str:
    """The pandas dtype a column is coerced to; nullable ints use the masked ``Int64``."""
    if column.type == "int":
        return "Int64" if column.nullable else "int64"
    if column.type == "float":
        return "float64"
    return "str"


def build_schema(contract: Contract):
    """The pandera schema that enforces the contract on a frame of raw strings."""
    import pandera.pandas as pa

    columns = {}
    for col in contract.columns:
        checks = []
        if col.min is not None and col.max is not None:
            checks.append(pa.Check.in_range(col.min, col.max))
        elif col.min is not None:
            checks.append(pa.Check.ge(col.min))
        elif col.max is not None:
            checks.append(pa.Check.le(col.max))
        if col.allowed is not None:
            checks.append(pa.Check.isin(list(col.allowed)))
        if col.type == "float":
            checks.append(
                pa.Check(lambda s: ~s.isin([math.inf, -math.inf]), element_wise=False, name="finite")
            )
        columns[col.name] = pa.Column(
            pandas_dtype(col), checks=checks, nullable=col.nullable, coerce=True
        )
    return pa.DataFrameSchema(
        columns,
        strict=True,
        ordered=False,
        unique=contract.column_names if contract.unique_rows else None,
        report_duplicates="exclude_first",
        name=contract.name,
    )
