"""The report of a partitioned validation, ordered as the single path orders it.

pandera lists one pass's failures check by check (duplicates, then coercions, then each column's
checks in schema order) and examples in data order; partitions report theirs separately, so the
Dask validate stage (:mod:`mlops_template.pipeline.distributed_validation`) merges them here into
the counts and examples :func:`~mlops_template.pipeline.validation.validate_file` would write.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.pipeline.validation import EXAMPLES_PER_CHECK, shown_value

DUPLICATE_CHECK = "row:duplicate"


def duplicate_examples(row_cases: pd.DataFrame, contract: Contract) -> list[tuple[int, str]]:
    """The first distinct values shown for duplicates, with the position of the column each came from.

    pandera lists a duplicate row's values column by column (missing ones left out), and a row
    shows its first listed value, so across partitions examples are ordered by that column first.
    """
    cases = row_cases[row_cases["check"] == "multiple_fields_uniqueness"].drop_duplicates("index")
    found: list[tuple[int, str]] = []
    for column, value in zip(cases["column"], cases["failure_case"], strict=True):
        shown = shown_value(value)
        if len(found) < EXAMPLES_PER_CHECK and shown not in [v for _, v in found]:
            found.append((contract.column_names.index(column), shown))
    return found


def _check_rank(name: str, contract: Contract, schema: Any) -> tuple:
    """Where pandera lists a check's failures within a pass (duplicates, coercions, then per column)."""
    if name == DUPLICATE_CHECK:
        return (0, 0, 0)
    column, _, check = name.partition(":")
    names = contract.column_names
    position = names.index(column) if column in names else len(names)
    if check.startswith("coerce_dtype("):
        return (1, position, 0)
    if check == "not_nullable":
        return (2, position, 0)
    if check.startswith("dtype("):
        return (2, position, 1)
    checks = schema.columns[column].checks if column in schema.columns else []
    ids = [c.error if c.error is not None else (c.name if c.name is not None else str(c)) for c in checks]
    return (2, position, 2 + ids.index(check)) if check in ids else (3, position, 0)


def merge_pass(results: list[dict], contract: Contract, schema: Any, counts: dict[str, int],
           examples: dict[str, list[str]]) -> None:
    """Add one pass's counts (in pandera's order of checks) and examples (in data order)."""
    names = {name for r in results for name in r.get("counts", {})}
    for name in sorted(names, key=lambda n: _check_rank(n, contract, schema)):
        counts[name] = counts.get(name, 0) + sum(r.get("counts", {}).get(name, 0) for r in results)
    found = sorted((position, p, i, value) for p, r in enumerate(results)
                   for i, (position, value) in enumerate(r.get("dup_examples", [])))
    per_check = [*(r.get("examples", {}) for r in results), {DUPLICATE_CHECK: [v for *_, v in found]} if found else {}]
    for shown_by_check in per_check:
        for name, shown in shown_by_check.items():
            seen = examples.setdefault(name, [])
            for value in shown:
                if len(seen) < EXAMPLES_PER_CHECK and value not in seen:
                    seen.append(value)
