"""Offline batch scoring: ``mlops-template score INPUT --output predictions.csv`` (any task).

Scores a CSV or parquet file with the deployed champion, or with a local model package
(``--model models/candidate``), a chunk at a time so memory stays bounded by ``--chunk-rows``:

1. **Which model** (:mod:`mlops_template.ops.batch_model`): by default the champion of
   ``deployments/champion.json``, from the BentoML store or MLflow, loaded only if its
   ``model.skops`` has the sha256 that record holds; ``--model PATH`` a local package, checked
   against its own checksum file only (the summary line says so).
2. **Each row against the contract**, with the validate stage's own pandera check
   (:func:`mlops_template.pipeline.validation.validate_frame` on the contract's input columns):
   a row that fails is not scored; its checks go to the rejected file, one line per failed check
   (the id, the row number, the column, the check and the value given).
3. **The answers** of the model's task, as the service gives them:
   ``task.answers(task.predict(model, features), threshold)`` flattened into columns
   (binary ``probability``, ``label``; multiclass ``label``, ``probabilities.<class>``;
   regression ``prediction``), beside the id column (``--id-column``, else ``row``, the 1-based
   row number) and the ``model_version``.

Exit codes: 0 when rows were scored (some may be rejected: the summary line counts both), 65
(:attr:`ExitCode.BAD_INPUT`) for an input that is missing, unreadable, shaped unlike the
contract or has no row that passes it, and when no champion is recorded; 1 when a model fails
its integrity check; 69 when the champion must come from a tracking server that does not answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.features import build_features
from mlops_template.ops.batch_files import FORMATS, ChunkWriter, file_format, read_chunks, total_rows
from mlops_template.ops.batch_model import ScoringModel, champion_model, local_model
from mlops_template.pipeline.validation import FAILED_CHECKS_COLUMN, validate_frame

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
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


# --- scoring -------------------------------------------------------------------------------------

def score_file(source: Path, output: Path, rejected: Path, scoring: ScoringModel, id_column: str | None = None,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: bool = False) -> ScoringSummary:
    """Score every row of ``source`` that passes the contract; write answers to ``output``, refusals to ``rejected``.

    Both outputs appear only when the whole input was read (a failure leaves neither, nor changes
    an earlier run's). UserError for an input missing, unreadable, without rows or unlike the contract.
    """
    if chunk_rows < 1:
        raise UserError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    _check_paths(source, output, rejected)
    from tqdm import tqdm

    inputs = [c.name for c in scoring.contract.input_columns]
    checked = dataclasses.replace(scoring.contract, columns=tuple(scoring.contract.input_columns), unique_rows=False)
    id_name = id_column or ROW_COLUMN
    reason_columns = [id_name, *([ROW_COLUMN] if id_name != ROW_COLUMN else []), *REASON_COLUMNS]
    summary = ScoringSummary()
    with ChunkWriter(output, [id_name]) as answers, ChunkWriter(rejected, reason_columns) as refusals, \
            tqdm(total=total_rows(source), desc="scoring", unit=" rows", unit_scale=True, file=sys.stderr,
                 disable=not progress) as bar:
        for chunk in read_chunks(source, scoring.contract, chunk_rows):
            if summary.rows == 0:
                _check_columns(list(chunk.columns), inputs, id_column, scoring.contract, source)
            scored, refused = _score_chunk(chunk, summary, scoring, checked, inputs, id_column)
            answers.write(scored)
            refusals.write(refused)
            bar.update(len(chunk))
        if summary.rows == 0:
            raise UserError(f"input {source} has no rows")
        answers.commit()
        refusals.commit()
    return summary


def _score_chunk(chunk: pd.DataFrame, summary: ScoringSummary, scoring: ScoringModel, checked: Contract,
                 inputs: list[str], id_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One chunk's answers (rows that pass the contract) and reasons (one line per failed check)."""
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


def _check_paths(source: Path, output: Path, rejected: Path) -> None:
    """Formats known, the input present, and no file named twice (UserError)."""
    if not source.is_file():
        raise UserError(f"input {source} does not exist or is not a file")
    file_format(source, "input")
    file_format(output, "--output")
    file_format(rejected, "--rejected")
    named = [p.resolve() for p in (source, output, rejected)]
    if len(set(named)) < 3:
        raise UserError(f"input {source}, --output {output} and --rejected {rejected} must be three different files")


def _check_columns(columns: list[str], inputs: list[str], id_column: str | None, contract: Contract,
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


# --- the command -----------------------------------------------------------------------------------

def default_rejected(output: Path) -> Path:
    """``predictions.csv`` -> ``predictions.rejected.csv`` (same folder, same format)."""
    name = output.name
    suffix = next((s for s in sorted(FORMATS, key=len, reverse=True) if name.lower().endswith(s)), output.suffix)
    return output.with_name(f"{name[:len(name) - len(suffix)]}.rejected{suffix}")


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` command's options."""
    parser.add_argument("input", type=Path, help="rows to score: .csv, .csv.gz, .parquet or .pq")
    parser.add_argument("--output", type=Path, required=True, help="predictions file (.csv, .csv.gz, .parquet)")
    parser.add_argument("--rejected", type=Path, help="rows that fail the contract, one line per failed check "
                        "(default: OUTPUT with .rejected before its suffix)")
    parser.add_argument("--id-column", help="input column that identifies a row (default: the row number)")
    parser.add_argument("--chunk-rows", type=_positive, default=DEFAULT_CHUNK_ROWS,
                        help=f"rows read, checked and scored at a time: bounds memory (default {DEFAULT_CHUNK_ROWS})")
    parser.add_argument("--model", type=Path, help="score with a local model package folder (e.g. models/candidate), "
                        "checked against its own checksum file, instead of the recorded champion")
    parser.add_argument("--threshold", type=float, help="binary: label positive at or above this probability "
                        "(default: the champion record's, else the package's serving.json)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar on stderr even when it is "
                        "not a terminal")


def handle(args: argparse.Namespace) -> int:
    """Load and verify the model, score the input, print the summary line; 0 when any row was scored."""
    rejected = args.rejected or default_rejected(args.output)
    _check_paths(args.input, args.output, rejected)
    with tempfile.TemporaryDirectory(prefix="score-") as tmp:
        scoring = local_model(args.model) if args.model else champion_model(Path(tmp))
        if args.threshold is not None:
            if not scoring.contract.is_binary:
                raise UserError(f"--threshold is for a binary task; this model's task is {scoring.task.name}")
            scoring = dataclasses.replace(scoring, threshold=args.threshold)
        summary = score_file(args.input, args.output, rejected, scoring, args.id_column, args.chunk_rows,
                             progress=args.progress or sys.stderr.isatty())
    line = summary.line(scoring, args.output, rejected)
    if not summary.scored:
        raise UserError(f"no row passed the contract, nothing was scored: {line}")
    print(line, flush=True)
    return ExitCode.OK
