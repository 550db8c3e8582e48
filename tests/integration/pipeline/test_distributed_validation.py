"""The Dask validation path gives the single-process result: same quarantine, report and valid rows.

A real two-process ``LocalCluster`` (started once for the module) validates the data split into
partitions; ``validate_file`` validates the same files in one process; everything is compared.
"""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops_template.core.contract import load_contract
from mlops_template.pipeline.distributed_validation import plan_blocks, validate_partitioned
from mlops_template.pipeline.validation import describe_rejections, validate_file

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = load_contract(ROOT / "contracts" / "adult.yaml")
HEADER = ",".join(CONTRACT.column_names)
BASE = ("39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, "
        "2174, 0, 40, United-States, <=50K")



def row(**changes: str) -> str:
    """BASE with some fields replaced (by column name)."""
    values = dict(zip(CONTRACT.column_names, BASE.split(", "), strict=True))
    values.update(changes)
    return ", ".join(values[c] for c in CONTRACT.column_names)


def assert_same(single, partitioned, out_dir: Path) -> None:
    """Quarantine, counts (and their order), examples, report text and valid rows all equal."""
    pd.testing.assert_frame_equal(partitioned.rejected, single.rejected)
    assert list(partitioned.failures_by_check.items()) == list(single.failures_by_check.items())
    assert partitioned.examples_by_check == single.examples_by_check
    assert partitioned.rows_in == single.rows_in
    assert partitioned.summary() == single.summary()
    assert describe_rejections(partitioned, sample_rows=len(single.rejected)) == describe_rejections(
        single, sample_rows=len(single.rejected))
    valid = pd.read_parquet(out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == [f"part-{i:05d}.parquet"
                                                           for i in range(partitioned.partitions)]
    assert partitioned.valid_rows == len(single.valid) == len(valid)
    pd.testing.assert_frame_equal(valid, single.valid)  # data order, dtypes included
    by_value = list(CONTRACT.column_names)
    pd.testing.assert_frame_equal(valid.sort_values(by_value).reset_index(drop=True),
                                  single.valid.sort_values(by_value).reset_index(drop=True))


def test_adult_in_eight_partitions_matches_single_process(client, tmp_path: Path) -> None:
    """The repo's Adult data, read as 8 byte-range partitions on 2 workers, gives validate_file's result."""
    plain = tmp_path / "raw" / "adult.csv"
    plain.parent.mkdir()
    with gzip.open(ROOT / "data" / "raw" / "adult.csv.gz", "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    blocksize = math.ceil(plain.stat().st_size / 8)
    assert len(plan_blocks(plain.parent, blocksize)) == 8
    out_dir = tmp_path / "validated"
    out_dir.write_text("an old file in the way")   # replaced, as a stale output would be

    partitioned = validate_partitioned(plain.parent, CONTRACT, client, out_dir, blocksize)
    single = validate_file(plain.parent, CONTRACT)

    assert partitioned.partitions == 8
    assert len(single.rejected) > 0 and single.failures_by_check.get("row:duplicate", 0) > 0
    assert partitioned.valid is None
    assert_same(single, partitioned, out_dir)


def crafted_folder(folder: Path) -> Path:
    """Two CSV files whose duplicates straddle partitions and files, with single and multiple failures."""
    folder.mkdir()
    a = [
        row(),                                           # 2  first copy of BASE
        row(age="41", sex="Female"),                     # 3  first copy of B
        row(age="52", occupation="?"),                   # 4  valid (nullable NA)
        row(),                                           # 5  later copy of BASE (same file)
        row(age="200", workclass="Bad-gov"),             # 6  range and allowed: age hidden by b's 'abc'
        row(age="33", hours_per_week="0", sex="Mle"),    # 7  two checks
        row(age="41.0", sex="Female"),                   # 8  later copy of B once 41.0 reads as 41
        row(age="34", fnlwgt="x77"),                     # 9  coercion failure
        row(age="039"),                                  # 10 copy of BASE only once age is coerced (pass 2)
        row(age="60", relationship="Husband"),           # 11 valid
    ]
    b = [
        row(age="41", sex="Female"),                     # 2  later copy of B (other file)
        row(age="abc", hours_per_week="120"),            # 3  age coercion, hours range
        row(age="33", hours_per_week="0", sex="Mle"),    # 4  later copy of a:7 and invalid itself
        row(age="45", sex="?"),                          # 5  not nullable
        row(age="46", capital_gain="2174.5"),            # 6  not an integer
        row(age="47", capital_gain="99999", race="Martian"),  # 7 two checks
        row(age="52", occupation="?"),                   # 8  later copy of a:4 (NA in both)
        row(age="70", education_num="17.0"),             # 9  range after integral-float normalising
        row(age="71"),                                   # 10 valid
        row(age="72", sex="Female"),                     # 11 valid
    ]
    (folder / "a.csv").write_text("\n".join([HEADER, *a]) + "\n")
    (folder / "b.csv").write_text("\n".join([HEADER, *b]) + "\n")
    return folder


def test_crafted_duplicates_across_partitions_and_files(client, tmp_path: Path) -> None:
    """Duplicates and multi-check failures spread over several partitions per file match the single path."""
    folder = crafted_folder(tmp_path / "raw")
    blocksize = 300   # two or three rows per partition
    blocks = plan_blocks(folder, blocksize)
    assert len(blocks) >= 6 and {Path(b.path).name for b in blocks} == {"a.csv", "b.csv"}
    out_dir = tmp_path / "validated"

    partitioned = validate_partitioned(folder, CONTRACT, client, out_dir, blocksize)
    single = validate_file(folder, CONTRACT)

    checks = dict(zip(zip(single.rejected["source_file"], single.rejected["source_row"], strict=True),
                      single.rejected["failed_checks"], strict=True))
    # The data exercises what it claims to (read from the single path, not written down by hand).
    assert checks[("a.csv", 5)] == checks[("a.csv", 8)] == checks[("b.csv", 2)] == "row:duplicate"
    assert "row:duplicate" in checks[("b.csv", 4)] and "; " in checks[("b.csv", 4)]
    assert ("a.csv", 10) in checks and ("b.csv", 8) in checks
    # b.csv:3's age 'abc' keeps age text in pass 1, hiding a.csv:6's age 200 (another partition).
    assert checks[("a.csv", 6)].startswith("workclass:") and "age:" not in checks[("a.csv", 6)]
    assert partitioned.partitions == len(blocks)
    assert_same(single, partitioned, out_dir)


def test_a_gzip_file_is_cut_into_partitions_as_it_streams(client, tmp_path: Path) -> None:
    """A .csv.gz is planned as one block, then cut into pieces of the blocksize by the worker that
    streams it; next to a plain CSV split in byte ranges, the result is still the single path's."""
    folder = crafted_folder(tmp_path / "raw")
    with open(folder / "b.csv", "rb") as src, gzip.open(folder / "b.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (folder / "b.csv").unlink()
    blocks = plan_blocks(folder, 300)
    assert [Path(b.path).name for b in blocks].count("b.csv.gz") == 1 and len(blocks) > 2
    out_dir = tmp_path / "validated"
    partitioned = validate_partitioned(folder, CONTRACT, client, out_dir, 300)
    assert partitioned.partitions >= len(blocks) + 3   # b.csv.gz's 10 rows of ~100 bytes: 4 pieces
    assert_same(validate_file(folder, CONTRACT), partitioned, out_dir)


def test_adult_gzip_in_pieces_matches_single_process(client, tmp_path: Path) -> None:
    """The repo's own data/raw/adult.csv.gz, streamed into 8 pieces, gives validate_file's result."""
    source = ROOT / "data" / "raw" / "adult.csv.gz"
    with gzip.open(source, "rb") as fh:
        blocksize = math.ceil(len(fh.read()) / 8)
    out_dir = tmp_path / "data.parquet"   # as the stage names it: the staging folder is named after it
    partitioned = validate_partitioned(source, CONTRACT, client, out_dir, blocksize)
    assert partitioned.partitions in (8, 9)   # the last piece may hold only the final partial line
    assert_same(validate_file(source, CONTRACT), partitioned, out_dir)


def test_float_duplicates_equal_as_numbers_not_text(client, tmp_path: Path) -> None:
    """-0.0 and 0.0, 1e0 and 1.0, NA and NA are duplicates as the single path compares them, across partitions."""
    from mlops_template.core.contract import contract_from_dict

    contract = contract_from_dict({
        "name": "floats", "read": {"na_values": ["?"]}, "unique_rows": True,
        "target": {"column": "label", "positive": "yes"},
        "columns": {"x": {"type": "float", "role": "numeric", "nullable": True, "min": -5, "max": 5},
                    "n": {"type": "int", "role": "numeric"},
                    "label": {"type": "str", "role": "target", "allowed": ["yes", "no"]}}})
    lines = ["0.0,1,yes", "?,2,no", "1.0,3,yes", "2.5,4,no", "-0.0,1,yes", "?,2,no", "1e0,3,yes",
             "inf,5,no", "9.0,6,yes", "2.50,4.0,no", "3.0,7,maybe", "-0.0,1,yes"]
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "f.csv").write_text("\n".join(["x,n,label", *lines]) + "\n")
    out_dir = tmp_path / "validated"
    partitioned = validate_partitioned(folder, contract, client, out_dir, 20)
    single = validate_file(folder, contract)

    assert partitioned.partitions >= 5
    assert single.failures_by_check["row:duplicate"] == 5   # -0.0, ?, 1e0, 2.50/4.0, the second -0.0
    pd.testing.assert_frame_equal(partitioned.rejected, single.rejected)
    assert list(partitioned.failures_by_check.items()) == list(single.failures_by_check.items())
    assert describe_rejections(partitioned) == describe_rejections(single)
    pd.testing.assert_frame_equal(pd.read_parquet(out_dir), single.valid)


def test_every_row_rejected(client, tmp_path: Path) -> None:
    """When nothing is valid the folder holds one empty part, like the single path's empty frame."""
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.csv").write_text("\n".join([HEADER, row(sex="Mle"), row(age="5"), row(sex="Mle")]) + "\n")
    out_dir = tmp_path / "validated"
    partitioned = validate_partitioned(folder, CONTRACT, client, out_dir, 150)
    single = validate_file(folder, CONTRACT)
    assert partitioned.partitions >= 3 and partitioned.valid_rows == 0 and len(single.valid) == 0
    pd.testing.assert_frame_equal(partitioned.rejected, single.rejected)
    assert partitioned.summary() == single.summary()
    assert list(pd.read_parquet(out_dir).columns) == CONTRACT.column_names and pd.read_parquet(out_dir).empty


def test_unreadable_and_mismatched_files_name_the_file(client, tmp_path: Path) -> None:
    """Bad files stop the run with the single path's error (DataValidationError naming the file)."""
    from mlops_template.pipeline.validation import DataValidationError

    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.csv").write_text("\n".join([HEADER, row()]) + "\n")
    (folder / "b.csv").write_text("\n".join([HEADER.replace("income", "salary"), row()]) + "\n")
    with pytest.raises(DataValidationError, match=r"b\.csv.*unexpected column"):
        validate_partitioned(folder, CONTRACT, client, tmp_path / "out", 100)
    (folder / "b.csv").write_text(HEADER + "\n")
    with pytest.raises(DataValidationError, match=r"b\.csv has no rows"):
        validate_partitioned(folder, CONTRACT, client, tmp_path / "out", 100)
    assert not (tmp_path / "out").exists()
