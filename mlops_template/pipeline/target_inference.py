"""Target inference: what a target column's values say the task is, and its declaration.

Part of contract inference (:mod:`mlops_template.pipeline.inference`, which documents the rules in
:func:`~mlops_template.pipeline.inference.infer_contract`): two values are binary, numbers that
are not all whole (or more whole numbers than there may be classes) a regression, 3 to
``max_categories`` text values or whole numbers multiclass classes; ``--task`` overrides, and a
target that cannot be the task asked for is a ContractError that says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops_template.core.contract import TASKS, ContractError

BOUND_MODES = ("none", "widened")
WIDEN_FRACTION = 0.5
MIN_CLASS_ROWS = 10  # a class with fewer labelled rows gets a warning


@dataclass
class TargetDraft:
    """The target column's declaration, the contract's ``target:`` block, and the task chosen."""

    spec: dict[str, Any]
    block: dict[str, Any]
    task: str
    note: str
    choice: str
    warnings: list[str]


def numeric_bounds(numbers: pd.Series, mode: str) -> dict[str, int | float]:
    """No bounds by default; ``widened``: the observed range widened by half its span each side."""
    if mode == "none":
        return {}
    low, high = float(numbers.min()), float(numbers.max())
    margin = (high - low) * WIDEN_FRACTION or abs(high) * WIDEN_FRACTION or 1.0
    lower = low - margin
    if low >= 0:
        lower = max(lower, 0.0)
    return {"min": plain_number(math.floor(lower)), "max": plain_number(math.ceil(high + margin))}


def plain_number(value: Any) -> int | float:
    """A number as YAML should show it: an int when it is whole."""
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


def _target_values(series: pd.Series) -> tuple[list[str], pd.Series, bool, bool]:
    """Distinct labels (numbers in numeric order), their row counts, and whether all are numbers, integers."""
    counts = series.dropna().astype(str).value_counts()
    numbers = pd.to_numeric(pd.Series(counts.index, dtype=object), errors="coerce")
    numeric = bool(len(counts)) and bool(numbers.notna().all())
    integral = numeric and bool((numbers % 1 == 0).all())
    if numeric:
        values = [v for _, v in sorted(zip(numbers.tolist(), counts.index, strict=True))]
    else:
        values = sorted(counts.index)
    return values, counts, numeric, integral


def _shown(values: list[str]) -> list[str]:
    return values[:10] + (["..."] if len(values) > 10 else [])


def _chosen_task(name: str, values: list[str], numeric: bool, integral: bool, max_classes: int,
                 warnings: list[str]) -> tuple[str, str]:
    """The task a target's values suggest, and why, in words (the rules: the module docstring)."""
    count = len(values)
    if count == 2:
        return "binary", "two values"
    if numeric and not integral:
        return "regression", f"{count} distinct numbers, not all whole"
    if count > max_classes:
        if numeric:
            return "regression", f"{count} distinct whole numbers, more than --max-categories {max_classes}"
        raise ContractError(
            f"target column {name!r} holds {count} distinct text values {_shown(values)}: too many classes "
            f"for a multiclass model (at most --max-categories {max_classes}) and not numbers for a "
            "regression; raise --max-categories if they really are classes")
    if integral:
        warnings.append(f"{name}: {count} whole numbers drafted as multiclass classes; if they are a quantity "
                        "(a count, an age, a score to predict as a number), onboard again with --task regression")
        return "multiclass", f"{count} integer codes, within 3 to --max-categories {max_classes}"
    return "multiclass", f"{count} text values, within 3 to --max-categories {max_classes}"


def _refusal(name: str, task: str, values: list[str], numeric: bool, max_classes: int) -> str | None:
    """Why the target cannot be ``task``, or None when it can."""
    count, shown = len(values), _shown(values)
    if task == "binary" and count != 2:
        return f"target column {name!r} holds {count} distinct values {shown}; a binary target has exactly two"
    if task == "multiclass" and count < 3:
        return (f"target column {name!r} holds {count} distinct values {shown}; a multiclass target has 3 or "
                "more (two values: --task binary)")
    if task == "multiclass" and count > max_classes:
        return (f"target column {name!r} holds {count} distinct values, more than --max-categories "
                f"{max_classes} classes; raise --max-categories if they really are classes")
    if task == "regression" and not numeric:
        text = [v for v in values if pd.isna(pd.to_numeric(v, errors="coerce"))]
        return (f"target column {name!r} holds values that are not numbers {_shown(text)}; a regression "
                "target is numeric")
    return None


def _positive_of(values: list[str], counts: pd.Series, positive: str | None) -> tuple[str, str]:
    """The positive class (as written in the data) and how it was chosen.

    Given, it may be spelled as a number equal to one of the values (``1`` for ``1.0``); not
    given, it is the minority class (the one a model is usually wanted for), ties going to the
    last value in order.
    """
    if positive is None:
        chosen = min(sorted(values, reverse=True), key=lambda v: counts[v])
        return chosen, (f"the minority class, {int(counts[chosen])} of {int(counts.sum())} labelled rows; "
                        "--positive chooses the other")
    if str(positive) in values:
        return str(positive), "as given"
    wanted = pd.to_numeric(str(positive), errors="coerce")
    matches = [v for v in values if pd.notna(wanted) and pd.to_numeric(v, errors="coerce") == wanted]
    if not matches:
        raise ContractError(f"positive class {positive!r} not among target values {values}")
    return matches[0], "as given"


def infer_target(series: pd.Series, name: str, positive: str | None, task: str | None = None,
                  max_classes: int = 50, bounds: str = "none") -> TargetDraft:
    """The target's declaration, its ``target:`` block and the task, chosen from its values or as asked."""
    values, counts, numeric, integral = _target_values(series)
    warnings: list[str] = []
    if not values:
        raise ContractError(f"target column {name!r} has no values: nothing to learn from")
    if task is not None and task not in TASKS:
        raise ContractError(f"--task must be one of {TASKS}, got {task!r}")
    if positive is not None and task not in (None, "binary"):
        raise ContractError(f"--positive names the positive class of a binary target, not of a {task} one")
    if task is None and positive is not None:
        task, why = "binary", "--positive given"
        refusal = _refusal(name, task, values, numeric, max_classes)
        if refusal:
            raise ContractError(f"{refusal}: --positive is for a binary target; leave it out to draft another task")
    elif task is None:
        if len(values) < 2:
            raise ContractError(f"target column {name!r} holds the single value {values[0]!r}: nothing to predict")
        task, why = _chosen_task(name, values, numeric, integral, max_classes, warnings)
    else:
        why = "--task"
        refusal = _refusal(name, task, values, numeric, max_classes)
        if refusal:
            raise ContractError(f"--task {task}: {refusal}")
    missing = int(series.isna().sum())
    block: dict[str, Any] = {"column": name}
    if task == "binary":
        chosen, how = _positive_of(values, counts, positive)
        binary_values = sorted(values)  # the order contracts have always listed them in
        spec: dict[str, Any] = {"type": "str", "role": "target", "allowed": binary_values}
        block["positive"] = chosen
        note = f"target, classes {binary_values}, positive {chosen!r}"
        choice = f"binary ({why}); positive class {chosen!r} ({how})"
    elif task == "multiclass":
        spec = {"type": "str", "role": "target", "allowed": values}
        block["task"] = task
        note = f"target, {len(values)} classes {_shown(values)}"
        choice = f"multiclass ({why}); classes {_shown(values)}"
        rare = [f"{v!r} ({int(counts[v])} rows)" for v in values if counts[v] < MIN_CLASS_ROWS]
        if rare:
            warnings.append(f"{name}: classes with fewer than {MIN_CLASS_ROWS} rows, which a model barely "
                            f"learns: {', '.join(rare[:10])}")
    else:
        numbers = pd.to_numeric(series.dropna().astype(str))
        observed = f"observed {plain_number(numbers.min())} to {plain_number(numbers.max())}"
        spec = {"type": "int" if integral else "float", "role": "target", **numeric_bounds(numbers, bounds),
                "description": f"{observed}; review the bounds"}
        block["task"] = task
        note = f"target, {spec['type']} numbers, {observed}, mean {plain_number(round(float(numbers.mean()), 6))}"
        choice = f"regression ({why}); {observed}"
    if missing:
        note += f"; {missing} rows have no label and will be rejected by validate"
    return TargetDraft(spec, block, task, note, f"task {choice}", warnings)
