"""Raw CSV files as partitions: byte ranges of plain CSVs cut at newlines; gzip files cut as they stream.

What the Dask engine's validate stage reads (:mod:`mlops_template.pipeline.distributed_validation`):
each worker parses its range with the single path's read options and rules, so a partition's
rows are the rows :func:`~mlops_template.pipeline.validation.validate_file` would read there.
A gzip file cannot be read from the middle, so one task streams it and cuts the decompressed
text into pieces of the same size (:func:`gzip_pieces`), parsed like byte ranges.
Limitation (as ``dask.dataframe.read_csv``): quoted fields holding newlines need a partition size
larger than the (decompressed) file.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlops_template.core.contract import Contract, apply_read_rules, csv_read_options, read_raw_csv
from mlops_template.pipeline.validation import DataValidationError, _check_columns, raw_files


@dataclass(frozen=True)
class Block:
    """One partition: a byte range of a plain CSV (``length`` None: the whole file).

    ``path`` as the raw path names it (for messages); ``location`` absolute, for workers whose
    working directory may differ.
    """

    path: str
    location: str
    offset: int = 0
    length: int | None = None

    @property
    def is_gzip(self) -> bool:
        """A whole gzip file, which only a worker streaming it can cut (:func:`gzip_pieces`)."""
        return self.length is None and self.path.endswith(".gz")


def plan_blocks(raw: str | Path, blocksize: int | str) -> list[Block]:
    """The partitions of a raw path, in data order: byte ranges of plain CSVs, whole gzip files
    (each cut into pieces by the worker that streams it: :func:`gzip_pieces`)."""
    from dask.utils import parse_bytes

    size = parse_bytes(blocksize) if isinstance(blocksize, str) else int(blocksize)
    if size <= 0:
        raise ValueError(f"blocksize must be positive, got {blocksize!r}")
    blocks = []
    for file in raw_files(raw):
        total = file.stat().st_size
        if file.name.endswith(".gz") or total <= size:
            blocks.append(Block(str(file), str(file.absolute())))
        else:
            blocks.extend(Block(str(file), str(file.absolute()), offset, size) for offset in range(0, total, size))
    return blocks


def read_partition(block: Block, contract: Contract) -> pd.DataFrame:
    """Read one partition with the single path's read rules; errors name the file like it does."""
    frame = read_block_rows(block, contract)
    _check_columns(frame, contract, source=block.path)
    return frame


def read_block_rows(block: Block, contract: Contract) -> pd.DataFrame:
    """One partition's rows as strings, the contract's read rules applied, its columns not checked.

    What batch scoring's Dask engine reads: its inputs lack the target and may hold an id column.
    """
    from fsspec.utils import read_block

    try:
        if block.length is None:
            frame = read_raw_csv(block.location, contract)
        else:
            with open(block.location, "rb") as fh:
                header = fh.readline()
                data = read_block(fh, block.offset, block.length, delimiter=b"\n")
            text = data if block.offset == 0 else header.rstrip(b"\r\n") + b"\n" + data
            frame = parse_text(text, contract)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataValidationError(f"raw data file {block.path} cannot be read as CSV: {exc}") from exc
    return frame.reset_index(drop=True)


def parse_text(text: bytes, contract: Contract) -> pd.DataFrame:
    """CSV text (a header line, then rows) read as :func:`read_raw_csv` reads a file."""
    return apply_read_rules(pd.read_csv(io.BytesIO(text), **csv_read_options(contract)), contract)


def gzip_pieces(block: Block, blocksize: int) -> Iterator[bytes]:
    """A gzip CSV's decompressed text in pieces of about ``blocksize`` bytes, cut after a newline,
    each starting with the file's header line; a file without rows gives its header alone.

    Only one piece (plus a partial line) is in memory at a time.
    """
    try:
        with gzip.open(block.location, "rb") as fh:
            header, carry, pieces = fh.readline(), b"", 0
            while data := fh.read(blocksize):
                data = carry + data
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    pieces += 1
                    yield header + data[:cut]
            if carry or not pieces:
                yield header + carry
    except (OSError, EOFError) as exc:   # not gzip, or cut short
        raise DataValidationError(f"raw data file {block.path} cannot be read as CSV: {exc}") from exc


def read_gzip_partitions(block: Block, contract: Contract, blocksize: int) -> Iterator[pd.DataFrame]:
    """The partitions of a whole-gzip ``block``, in order, each read and checked as :func:`read_partition` does."""
    for text in gzip_pieces(block, blocksize):
        try:
            frame = parse_text(text, contract).reset_index(drop=True)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataValidationError(f"raw data file {block.path} cannot be read as CSV: {exc}") from exc
        _check_columns(frame, contract, source=block.path)
        yield frame
