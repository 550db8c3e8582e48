"""The files of a batch-scoring run: the input read in chunks, the outputs written in chunks.

Batch scoring (:mod:`mlops_template.ops.batch_scoring`) keeps memory bounded by the chunk size,
whatever the file's size: a CSV is read with pandas' ``chunksize`` (every cell a string, the
contract's read rules applied, exactly as the validate stage reads raw data), a parquet file in
record batches of at most that many rows with pyarrow. The outputs are appended chunk by chunk
under a temporary name in their own folder and renamed into place only when the whole run
succeeded, so a crash or a refused input never leaves half a predictions file that looks whole.
The format of every file follows its name: ``.csv`` / ``.csv.gz`` or ``.parquet`` / ``.pq``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from mlops_template.core.contract import Contract, apply_read_rules, csv_read_options
from mlops_template.core.exitcodes import UserError

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: Path, what: str) -> str:
    """``csv`` or ``parquet`` by the file name's suffix; UserError naming the known ones."""
    name = path.name.lower()
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    raise UserError(f"{what} {path}: unknown format; the name must end with one of {sorted(FORMATS)}")


def total_rows(path: Path) -> int | None:
    """The number of rows a parquet file holds (from its footer), None for a CSV (unknown unread)."""
    if file_format(path, "input") != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
        raise UserError(f"input {path} cannot be read as parquet: {exc}") from exc


def read_chunks(path: Path, contract: Contract, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The input's rows, at most ``chunk_rows`` at a time, with the contract's read rules applied.

    UserError (exit 65) names the file when it is missing, empty or unreadable, also when the
    fault shows only in a later chunk.
    """
    if not path.is_file():
        raise UserError(f"input {path} does not exist or is not a file")
    if file_format(path, "input") == "parquet":
        yield from parquet_chunks(path, contract, chunk_rows)
    else:
        yield from _csv_chunks(path, contract, chunk_rows)


def _csv_chunks(path: Path, contract: Contract, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """CSV rows as strings, ``chunk_rows`` at a time (pandas' chunked reader)."""
    try:
        with pd.read_csv(path, chunksize=chunk_rows, **csv_read_options(contract)) as reader:
            for chunk in reader:
                yield apply_read_rules(chunk, contract)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"input {path} is empty (not even a header line)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise UserError(f"input {path} cannot be read as CSV: {' '.join(str(exc).split())}") from exc


def parquet_chunks(path: Path, contract: Contract, chunk_rows: int,
                   row_groups: list[int] | None = None) -> Iterator[pd.DataFrame]:
    """Parquet rows as typed columns, in record batches of at most ``chunk_rows`` rows.

    ``row_groups`` reads only those row groups (the Dask engine's partitions); None, every one.

    ``iter_batches`` decodes one row group's column chunks at a time and hands out slices of it,
    so memory is bounded by the chunk and the file's row-group size, not by the file.
    """
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
        for batch in source.iter_batches(batch_size=chunk_rows, row_groups=row_groups):
            yield apply_read_rules(batch.to_pandas(), contract)
    except UserError:
        raise
    except Exception as exc:  # ArrowInvalid, OSError, ... from a file that is not (or no longer) parquet
        raise UserError(f"input {path} cannot be read as parquet: {' '.join(str(exc).split())}") from exc


class ChunkWriter:
    """One output file written a chunk at a time, under a temporary name until :meth:`commit`.

    Use as a context manager: leaving it with an exception removes the temporary file, and the
    file at ``path`` (a previous run's, if any) is untouched.
    """

    def __init__(self, path: Path, empty_columns: list[str]) -> None:
        self.path = path
        self.kind = file_format(path, "output")
        self.empty_columns = empty_columns  # the header of a file no row was written to
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.rows = 0
        self._csv: IO[str] | None = None
        self._parquet: Any = None

    def __enter__(self) -> ChunkWriter:
        """Create the output's folder; nothing is written until the first chunk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind: Any, exc: Any, trace: Any) -> None:
        """On an exception, drop the temporary file (the committed file is never touched)."""
        if kind is not None:
            self._close()
            self.tmp.unlink(missing_ok=True)

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows (the first chunk fixes the columns and, in parquet, their types)."""
        if frame.empty:
            return
        if self.kind == "csv":
            if self._csv is None:
                import gzip

                opener: Any = gzip.open if self.path.name.lower().endswith(".gz") else open
                self._csv = opener(self.tmp, "wt", encoding="utf-8", newline="")
                frame.to_csv(self._csv, index=False)
            else:
                frame.to_csv(self._csv, index=False, header=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._parquet is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            else:
                table = pa.Table.from_pandas(frame, schema=self._parquet.schema, preserve_index=False)
            self._parquet.write_table(table)
        self.rows += len(frame)

    def commit(self) -> Path:
        """Finish the file and rename it into place; a file no row was written to holds the header only."""
        if self._csv is None and self._parquet is None:
            empty = pd.DataFrame({c: pd.Series(dtype="str") for c in self.empty_columns})
            if self.kind == "csv":
                gz = self.path.name.lower().endswith(".gz")
                empty.to_csv(self.tmp, index=False, compression="gzip" if gz else None)
            else:
                empty.to_parquet(self.tmp, index=False)
        self._close()
        self.tmp.replace(self.path)
        return self.path

    def _close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
