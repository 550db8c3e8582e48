"""One chunk of a batch-scoring run: its rows checked against the contract, scored, and refused.

Shared by both engines of ``mlops-template score`` (:mod:`mlops_template.ops.batch_scoring`, one
process, chunk by chunk; :mod:`mlops_template.ops.batch_distributed`, Dask workers, partition by
partition), so a row gets the same answer, number and reasons whichever engine read it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.exitcodes import UserError
from mlops_template.core.features import build_features
from mlops_template.ops.batch_model import ScoringModel
from mlops_template.pipeline.validation import FAILED_CHECKS_COLUMN, validate_frame

ROW_COLUMN = "row"  # the 1-based row number of the input (header excluded): the id when none is named
VERSION_COLUMN = "model_version"
REASON_COLUMNS = ["column", "check", "value"]
_POSITION = "__position"  # a row's place in its chunk, carried through validation


@dataclass
class ScoringSummary:
    """What a run did: rows read, scored and rejected, and how often each check failed."""

    rows: int = 0
    scored: int = 0
    rejected: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def line(self, model: ScoringModel, output: Path, rejected: Path) -> str:
        """The one line a person or a log reads: counts, the top failed checks, the model, the files."""
        text = f"scored {self.scored} of {self.rows} rows, rejected {self.rejected}"
        if self.failures:
            text += " (" + ", ".join(f"{check}: {n}" for check, n in self.failures.most_common(3)) + \
                (", ..." if len(self.failures) > 3 else "") + ")"
        return f"{text}; model: {model.describe()}; predictions: {output}; rejected rows: {rejected}"


def checked_contract(contract: Contract) -> Contract:
    """The contract rows are checked against: its input columns only, duplicates allowed (each row stands alone)."""
    return dataclasses.replace(contract, columns=tuple(contract.input_columns), unique_rows=False)


def reason_columns(id_column: str | None) -> list[str]:
    """The rejected file's columns: the id, the row number (when the id is another column), column, check, value."""
    id_name = id_column or ROW_COLUMN
    return [id_name, *([ROW_COLUMN] if id_name != ROW_COLUMN else []), *REASON_COLUMNS]


def score_chunk(chunk: pd.DataFrame, summary: ScoringSummary, scoring: ScoringModel, checked: Contract,
                inputs: list[str], id_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One chunk's answers (rows that pass the contract) and reasons (one line per failed check).

    Rows are numbered from ``summary.rows + 1`` (the rows before this chunk), and ``summary`` counts
    this chunk: both engines number and count rows through it, chunk by chunk or partition by partition.
    """
    n = len(chunk)
    rows = np.arange(summary.rows + 1, summary.rows + n + 1)
    ids = chunk[id_column].to_numpy() if id_column else rows
    summary.rows += n
    if n == 0:
        return pd.DataFrame(), pd.DataFrame()
    frame = chunk.loc[:, inputs].reset_index(drop=True)
    result = validate_frame(frame, checked, origin=pd.DataFrame({_POSITION: np.arange(n)}))
    refused_at = result.rejected[_POSITION].to_numpy(dtype="int64") if len(result.rejected) else np.array([], int)
    valid_at = np.setdiff1d(np.arange(n), refused_at)  # validation keeps the valid rows in input order
    if len(valid_at) != len(result.valid):
        raise RuntimeError(f"validation returned {len(result.valid)} valid rows for {len(valid_at)} positions")
    scored = pd.DataFrame()
    if len(valid_at):
        output = scoring.task.predict(scoring.model, build_features(result.valid, scoring.spec))
        scored = answers_frame(scoring.task.answers(output, scoring.threshold))
        if id_column in scored.columns:
            raise UserError(f"--id-column {id_column!r} is also an answer column: name another column")
        scored.insert(0, id_column or ROW_COLUMN, ids[valid_at])
        scored[VERSION_COLUMN] = scoring.version
    reasons = failed_checks(result.rejected, inputs)
    summary.scored += len(valid_at)
    summary.rejected += len(refused_at)
    summary.failures.update(f"{column}:{check.split('(')[0]}" for _, column, check, _ in reasons)  # isin, not its list
    at = np.array([r[0] for r in reasons], dtype="int64")
    refused = pd.DataFrame({id_column or ROW_COLUMN: ids[at]})
    if id_column not in (None, ROW_COLUMN):
        refused[ROW_COLUMN] = rows[at]
    for i, name in enumerate(REASON_COLUMNS, start=1):
        refused[name] = pd.Series([r[i] for r in reasons], dtype="str")
    return scored, refused


def answers_frame(answers: list[dict[str, Any]]) -> pd.DataFrame:
    """The task's per-row answers as columns; a mapping (multiclass ``probabilities``) becomes ``key.name`` columns."""
    columns: dict[str, list[Any]] = {}
    for key, value in answers[0].items():
        if isinstance(value, dict):
            for name in value:
                columns[f"{key}.{name}"] = [a[key][name] for a in answers]
        else:
            columns[key] = [a[key] for a in answers]
    return pd.DataFrame(columns)


def failed_checks(rejected: pd.DataFrame, inputs: list[str]) -> list[tuple[int, str, str, str | None]]:
    """(position, column, check, value given) for each check each rejected row failed.

    The validate stage joins a row's failures as ``column:check; column:check``; a check's own text
    may hold ``; `` (an ``isin`` list), so the split is only before a known column name.
    """
    if rejected.empty:
        return []
    split = re.compile("; (?=(?:" + "|".join(re.escape(c) for c in sorted([*inputs, "row"], key=len, reverse=True))
                       + "):)")
    reasons = []
    for row in rejected.to_dict("records"):
        for failure in split.split(str(row[FAILED_CHECKS_COLUMN])):
            column = next((c for c in sorted(inputs, key=len, reverse=True) if failure.startswith(f"{c}:")),
                          failure.split(":", 1)[0])
            value = row.get(column)
            shown = None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
            reasons.append((int(row[_POSITION]), column, failure[len(column) + 1:], shown))
    return reasons


def check_columns(columns: list[str], inputs: list[str], id_column: str | None, contract: Contract,
                  source: Path) -> None:
    """The input has every input column of the contract, the id column, and nothing unexplained."""
    missing = [c for c in inputs if c not in columns]
    if id_column is not None and id_column not in columns:
        missing.append(id_column)
    extra = [c for c in columns if c not in inputs and c not in (id_column, contract.target)]
    problems = ([f"missing column(s) {missing}"] if missing else []) + \
        ([f"unexpected column(s) {extra} (name an identifier with --id-column)"] if extra else [])
    if problems:
        raise UserError(f"input {source} does not match contract {contract.name!r}: {'; '.join(problems)}; "
                        f"expected {inputs}")
