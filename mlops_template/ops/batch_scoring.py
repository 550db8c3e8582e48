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

``--engine dask`` scores the file's partitions (CSV byte ranges of ``--partition-mb``, parquet row
groups) on a Dask cluster instead, with the same files as a result
(:mod:`mlops_template.ops.batch_distributed`).

Exit codes: 0 when rows were scored (some may be rejected: the summary line counts both), 65
(:attr:`ExitCode.BAD_INPUT`) for an input that is missing, unreadable, shaped unlike the
contract or has no row that passes it, and when no champion is recorded; 1 when a model fails
its integrity check; 69 when the champion must come from a tracking server that does not answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.ops.batch_chunks import (
    ROW_COLUMN,
    ScoringSummary,
    check_columns,
    checked_contract,
    reason_columns,
    score_chunk,
)
from mlops_template.ops.batch_files import FORMATS, ChunkWriter, file_format, read_chunks, total_rows
from mlops_template.ops.batch_model import ScoringModel, champion_model, local_model

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
DEFAULT_PARTITION_MB = 64  # --engine dask: plain-CSV megabytes per partition


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
    checked = checked_contract(scoring.contract)
    summary = ScoringSummary()
    with ChunkWriter(output, [id_column or ROW_COLUMN]) as answers, \
            ChunkWriter(rejected, reason_columns(id_column)) as refusals, \
            tqdm(total=total_rows(source), desc="scoring", unit=" rows", unit_scale=True, file=sys.stderr,
                 disable=not progress) as bar:
        for chunk in read_chunks(source, scoring.contract, chunk_rows):
            if summary.rows == 0:
                check_columns(list(chunk.columns), inputs, id_column, scoring.contract, source)
            scored, refused = score_chunk(chunk, summary, scoring, checked, inputs, id_column)
            answers.write(scored)
            refusals.write(refused)
            bar.update(len(chunk))
        if summary.rows == 0:
            raise UserError(f"input {source} has no rows")
        answers.commit()
        refusals.commit()
    return summary


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
                        help=f"rows read, checked and scored at a time: bounds memory (default {DEFAULT_CHUNK_ROWS}); "
                        "--engine single only")
    parser.add_argument("--engine", choices=("single", "dask"), default="single",
                        help="single: one process, chunk by chunk (default); dask: partitions scored on a "
                        "dask.distributed cluster (DASK_SCHEDULER_ADDRESS, else a local one of DASK_LOCAL_WORKERS "
                        "processes), same output")
    parser.add_argument("--partition-mb", type=_positive, default=DEFAULT_PARTITION_MB,
                        help="--engine dask: megabytes of a plain CSV per partition (a .csv.gz is one partition, "
                        f"a parquet file's partitions are its row groups; default {DEFAULT_PARTITION_MB})")
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
        progress = args.progress or sys.stderr.isatty()
        if args.engine == "dask":
            from mlops_template.ops.batch_distributed import score_partitioned
            from mlops_template.pipeline.distributed import dask_client

            with dask_client() as client:
                summary = score_partitioned(args.input, args.output, rejected, scoring, args.id_column, client,
                                            args.partition_mb * 2**20, progress=progress)
        else:
            summary = score_file(args.input, args.output, rejected, scoring, args.id_column, args.chunk_rows,
                                 progress=progress)
    line = summary.line(scoring, args.output, rejected)
    if not summary.scored:
        raise UserError(f"no row passed the contract, nothing was scored: {line}")
    print(line, flush=True)
    return ExitCode.OK
