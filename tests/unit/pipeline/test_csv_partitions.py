"""A gzip CSV streamed into pieces: every row once, in order, each piece a CSV of its own."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mlops_template.pipeline.csv_partitions import Block, gzip_pieces
from mlops_template.pipeline.validation import DataValidationError

HEADER = b"a,b\r\n"


def gz(path: Path, text: bytes) -> Block:
    with gzip.open(path, "wb") as fh:
        fh.write(text)
    return Block(path.name, str(path))


@pytest.mark.parametrize("ending", [b"\n", b""])
@pytest.mark.parametrize("blocksize", [1, 7, 64, 10_000])
def test_pieces_hold_every_row_once_in_order_each_after_the_header(tmp_path, blocksize, ending) -> None:
    rows = [f"{i},{'x' * (i % 13)}\r\n".encode() for i in range(200)]
    text = HEADER + b"".join(rows).rstrip(b"\r\n") + ending
    pieces = list(gzip_pieces(gz(tmp_path / "d.csv.gz", text), blocksize))

    assert all(p.startswith(HEADER) for p in pieces)
    assert HEADER + b"".join(p[len(HEADER):] for p in pieces) == text
    assert all(p.endswith(b"\n") for p in pieces[:-1])   # cut after a newline, never inside a row
    if blocksize >= 64:
        assert max(len(p) for p in pieces) <= len(HEADER) + blocksize + 20   # about blocksize each
        assert len(pieces) <= -(-(len(text) - len(HEADER)) // blocksize) + 1


def test_a_file_without_rows_gives_its_header_and_an_empty_one_nothing_but_an_empty_piece(tmp_path) -> None:
    assert list(gzip_pieces(gz(tmp_path / "h.csv.gz", HEADER), 64)) == [HEADER]
    assert list(gzip_pieces(gz(tmp_path / "e.csv.gz", b""), 64)) == [b""]


def test_a_file_that_is_not_gzip_names_itself(tmp_path) -> None:
    (tmp_path / "fake.csv.gz").write_bytes(b"a,b\n1,2\n")
    with pytest.raises(DataValidationError, match="fake.csv.gz cannot be read as CSV"):
        list(gzip_pieces(Block("fake.csv.gz", str(tmp_path / "fake.csv.gz")), 64))
