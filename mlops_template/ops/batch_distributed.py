"""Batch scoring on a Dask cluster (``score --engine dask``): the single engine's result, partition by partition.

The input is cut into partitions: a plain ``.csv`` into byte ranges at newlines
(:func:`mlops_template.pipeline.csv_partitions.plan_blocks`, ``--partition-mb`` each), a parquet
file one partition per row group. A ``.csv.gz`` cannot be read from the middle: one worker streams
it first and writes plain CSV pieces of ``--partition-mb`` (each with the header) into the
temporary folder beside OUTPUT (:func:`split_gzip`), which are the partitions. Then two passes on
the workers:

1. each partition's rows are counted, so the client knows where each starts: the ``row`` column
   (1-based, header excluded) continues across partitions exactly as the single engine numbers it;
2. each partition is read with the single engine's read rules for its format (the validate
   stage's partition reader for CSV, :func:`~mlops_template.ops.batch_files.parquet_chunks` for
   parquet) and scored by :func:`~mlops_template.ops.batch_chunks.score_chunk`, the single
   engine's own per-chunk function, numbering from its offset. The worker writes its answers and
   refusals as parquet parts in a temporary folder beside OUTPUT.

The client streams the parts, in partition order, into OUTPUT and REJECTED through the single
engine's :class:`~mlops_template.ops.batch_files.ChunkWriter` (same formats, same atomic commit:
a failure anywhere leaves neither file, nor changes an earlier run's), so it holds one
partition's outputs at a time. The model, verified on the client, travels to the workers as a
task argument (scattered once). Workers read the input and write the parts by path: on a remote
cluster the input's and OUTPUT's folders must be mounted at the same paths on every worker.
Limitation (as the validate stage's): CSV text is cut at newlines, so quoted fields holding
newlines need a partition larger than the (decompressed) file.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlops_template.core.contract import Contract
from mlops_template.core.exitcodes import UserError
from mlops_template.ops.batch_chunks import (
    ROW_COLUMN,
    ScoringSummary,
    check_columns,
    checked_contract,
    reason_columns,
    score_chunk,
)
from mlops_template.ops.batch_files import ChunkWriter, file_format, parquet_chunks
from mlops_template.ops.batch_model import ScoringModel
from mlops_template.pipeline.csv_partitions import Block, gzip_pieces, plan_blocks, read_block_rows
from mlops_template.pipeline.validation import DataValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from distributed import Client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partition:
    """One partition of the input: a CSV byte range (``block``) or one parquet row group (``row_group``)."""

    source: str
    block: Block | None = None
    row_group: int | None = None


def plan_partitions(source: Path, blocksize: int) -> list[Partition]:
    """The input's partitions in data order (UserError for a parquet file pyarrow cannot open)."""
    if file_format(source, "input") == "parquet":
        import pyarrow.parquet as pq

        try:
            groups = pq.ParquetFile(source).metadata.num_row_groups
        except Exception as exc:  # ArrowInvalid, OSError, ... for a file that is not parquet
            raise UserError(f"input {source} cannot be read as parquet: {' '.join(str(exc).split())}") from exc
        return [Partition(str(source.absolute()), row_group=i) for i in range(max(groups, 1))]
    if is_gzip(source):  # plan_blocks knows only a lowercase .gz; cut by split_gzip as it streams
        return [Partition(str(source), Block(str(source), str(source.absolute())))]
    return [Partition(str(source), block) for block in plan_blocks(source, blocksize)]


def is_gzip(source: Path) -> bool:
    """A gzip CSV input, by its name (``.gz`` in any case), as the single engine tells it."""
    return source.name.lower().endswith(".gz")


def split_gzip(partition: Partition, blocksize: int, folder: str) -> list[Partition]:
    """Pass 0, on a worker, for a ``.csv.gz``: plain CSV pieces of about ``blocksize`` bytes in ``folder``.

    Each piece starts with the header line, so each is read as a file of its own; they are the
    partitions of the passes that follow, in order. Messages keep naming the input.
    """
    assert partition.block is not None
    pieces = []
    try:
        for i, text in enumerate(gzip_pieces(partition.block, blocksize)):
            piece = Path(folder) / f"piece-{i:05d}.csv"
            piece.write_bytes(text)
            pieces.append(Partition(partition.source, Block(partition.block.path, str(piece))))
    except DataValidationError as exc:
        raise UserError(f"input {partition.block.path} cannot be read as CSV: "
                        f"{' '.join(str(exc.__cause__ or exc).split())}") from exc
    return pieces


def read_partition_rows(partition: Partition, contract: Contract) -> Iterator[pd.DataFrame]:
    """A partition's rows, read as the single engine reads that format (UserError names the input)."""
    if partition.block is None:
        path = Path(partition.source)
        rows = pq_rows(path, partition.row_group or 0)
        yield from parquet_chunks(path, contract, max(rows, 1), row_groups=[partition.row_group or 0])
        return
    try:
        yield read_block_rows(partition.block, contract)
    except DataValidationError as exc:
        cause = exc.__cause__
        if isinstance(cause, pd.errors.EmptyDataError) and partition.block.offset == 0:
            raise UserError(f"input {partition.block.path} is empty (not even a header line)") from exc
        raise UserError(f"input {partition.block.path} cannot be read as CSV: "
                        f"{' '.join(str(cause or exc).split())}") from exc


def pq_rows(path: Path, row_group: int) -> int:
    """The number of rows of one row group, from the parquet footer (0 for a file without row groups)."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    return metadata.row_group(row_group).num_rows if metadata.num_row_groups else 0


def count_partition(partition: Partition, contract: Contract) -> tuple[int, list[str]]:
    """Pass 1, on a worker: the partition's rows and its columns (parquet: from the footer, nothing decoded)."""
    if partition.block is None:
        import pyarrow.parquet as pq

        try:  # the columns as a batch's to_pandas gives them (a stored pandas index is not a column)
            empty = pq.ParquetFile(partition.source).schema_arrow.empty_table().to_pandas()
            return pq_rows(Path(partition.source), partition.row_group or 0), [str(c).strip() for c in empty.columns]
        except Exception as exc:  # the file changed or is not parquet
            raise UserError(f"input {partition.source} cannot be read as parquet: "
                            f"{' '.join(str(exc).split())}") from exc
    rows = 0
    columns: list[str] = []
    for frame in read_partition_rows(partition, contract):
        rows += len(frame)
        columns = list(frame.columns)
    return rows, columns


def score_partition(partition: Partition, index: int, offset: int, scoring: ScoringModel, id_column: str | None,
                    folder: str) -> ScoringSummary:
    """Pass 2, on a worker: score one partition numbering rows from ``offset + 1``; write its parts to ``folder``.

    Returns the partition's own counts. Parts are ``answers-NNNNN.parquet`` and
    ``rejected-NNNNN.parquet``, absent when the partition has no such rows.
    """
    inputs = [c.name for c in scoring.contract.input_columns]
    checked = checked_contract(scoring.contract)
    summary = ScoringSummary(rows=offset)
    answers: list[pd.DataFrame] = []
    refusals: list[pd.DataFrame] = []
    for frame in read_partition_rows(partition, scoring.contract):
        scored, refused = score_chunk(frame, summary, scoring, checked, inputs, id_column)
        answers += [scored] if not scored.empty else []
        refusals += [refused] if not refused.empty else []
    for name, frames in (("answers", answers), ("rejected", refusals)):
        if frames:
            pd.concat(frames, ignore_index=True).to_parquet(Path(folder) / part_name(name, index), index=False)
    summary.rows -= offset
    return summary


def part_name(kind: str, index: int) -> str:
    """``answers-00003.parquet``: a partition's part of one output."""
    return f"{kind}-{index:05d}.parquet"


def score_partitioned(source: Path, output: Path, rejected: Path, scoring: ScoringModel, id_column: str | None,
                      client: Client, blocksize: int, progress: bool = False) -> ScoringSummary:
    """Score ``source`` on the cluster of ``client``: what :func:`~mlops_template.ops.batch_scoring.score_file` writes.

    Same files, rows, numbers, answers and reasons as the single engine; UserError for an input
    missing, unreadable, without rows or unlike the contract, and nothing written then.
    """
    if blocksize < 1:
        raise UserError(f"--partition-mb must be at least 1, got a blocksize of {blocksize} bytes")
    if not source.is_file():
        raise UserError(f"input {source} does not exist or is not a file")
    output.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.parts-", dir=output.parent)).absolute()
    try:
        return _score(source, output, rejected, scoring, id_column, client, blocksize, progress, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _score(source: Path, output: Path, rejected: Path, scoring: ScoringModel, id_column: str | None,
           client: Client, blocksize: int, progress: bool, folder: Path) -> ScoringSummary:
    from tqdm import tqdm

    partitions = plan_partitions(source, blocksize)
    if is_gzip(source):
        partitions = client.submit(split_gzip, partitions[0], blocksize, str(folder), pure=False).result()
    contract = scoring.contract
    inputs = [c.name for c in contract.input_columns]
    counted = client.gather(client.map(count_partition, partitions, contract=contract, pure=False))
    for _, columns in counted:
        check_columns(columns, inputs, id_column, contract, source)
    sizes = [rows for rows, _ in counted]
    if sum(sizes) == 0:
        raise UserError(f"input {source} has no rows")
    offsets = [0, *itertools.accumulate(sizes)][:-1]
    logger.info("dask: scoring %d rows of %s in %d partitions", sum(sizes), source, len(partitions))
    [model] = client.scatter([scoring], broadcast=True, hash=False)
    futures = [client.submit(score_partition, partition, i, offsets[i], model, id_column, str(folder), pure=False)
               for i, partition in enumerate(partitions)]
    summary = ScoringSummary()
    try:
        with ChunkWriter(output, [id_column or ROW_COLUMN]) as answers, \
                ChunkWriter(rejected, reason_columns(id_column)) as refusals, \
                tqdm(total=sum(sizes), desc="scoring", unit=" rows", unit_scale=True, file=sys.stderr,
                     disable=not progress) as bar:
            for i, future in enumerate(futures):
                part = future.result()
                for name, writer in (("answers", answers), ("rejected", refusals)):
                    if (folder / part_name(name, i)).exists():
                        writer.write(pd.read_parquet(folder / part_name(name, i)))
                        (folder / part_name(name, i)).unlink()
                summary.rows += part.rows
                summary.scored += part.scored
                summary.rejected += part.rejected
                summary.failures.update(part.failures)
                bar.update(part.rows)
            answers.commit()
            refusals.commit()
    finally:
        client.cancel(futures)
        client.cancel([model])
    return summary
