"""``score --engine dask`` gives the single engine's files: same rows, numbers, answers and reasons.

A real two-process ``LocalCluster`` (started once for the module) scores Adult rows, some failing
the contract, cut into at least four partitions (CSV byte ranges, parquet row groups); the single
engine (:func:`mlops_template.ops.batch_scoring.score_file`) scores the same file in one chunk and
both outputs are read back and compared. The model is a real package (skops, checksum, card,
contract, serving.json) of a histogram gradient-boosting pipeline, whose answers do not depend on
how many rows are scored together, so the comparison is exact.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops_template.core.artifacts import CARD_TYPES_KEY, model_types, save_model
from mlops_template.core.exitcodes import ExitCode, UserError
from mlops_template.core.io import write_json
from mlops_template.core.package_files import (
    CONTRACT_FILE,
    FEATURE_SPEC_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    SERVING_FILE,
)
from mlops_template.ops.batch_distributed import plan_partitions, read_partition_rows, score_partitioned, split_gzip
from mlops_template.ops.batch_files import read_chunks
from mlops_template.ops.batch_model import ScoringModel, local_model
from mlops_template.ops.batch_scoring import score_file
from tests.support.servers import REPO, clean_env
from tests.support.task_models import TaskData, adult_data

ROWS = 3000
FAULTS = {  # position -> column, value: each fails a check of contracts/adult.yaml
    5: ("age", "150"), 777: ("workclass", "Astronaut"), 1400: ("hours_per_week", "lots"),
    2100: ("sex", "X"), 2101: ("age", "-3"), 2999: ("native_country", "Atlantis"),
}



@pytest.fixture(scope="module")
def data() -> TaskData:
    """Adult: 2,000 training rows, :data:`ROWS` held-out rows to score."""
    return adult_data(train_rows=2000, test_rows=ROWS)


@pytest.fixture(scope="module")
def package(tmp_path_factory, data) -> Path:
    """A binary model package as training and packaging write it, fitted on Adult rows."""
    pipeline = data.fit()
    directory = tmp_path_factory.mktemp("package") / "adult"
    directory.mkdir()
    digest = save_model(pipeline, directory / MODEL_FILE)
    data.spec.to_json(directory / FEATURE_SPEC_FILE)
    write_json(directory / MODEL_CARD_FILE, {"task": "binary", "classes": list(data.task.classes), "sha256": digest,
                                             CARD_TYPES_KEY: model_types(directory / MODEL_FILE)})
    (directory / CONTRACT_FILE).write_text(data.contract_yaml(), encoding="utf-8")
    write_json(directory / SERVING_FILE, {"threshold": 0.4, "model_version": "7"})
    return directory


@pytest.fixture(scope="module")
def scoring(package) -> ScoringModel:
    return local_model(package)


@pytest.fixture(scope="module")
def rows(scoring, data) -> pd.DataFrame:
    """Held-out Adult inputs as strings, with :data:`FAULTS` written in, and a customer id in front."""
    frame = data.test.drop(columns=[scoring.contract.target]).astype("string").astype(object)
    for position, (column, value) in FAULTS.items():
        frame.loc[position, column] = value
    frame.insert(0, "customer_id", [f"C-{10_000 + i}" for i in range(len(frame))])
    return frame


def write(frame: pd.DataFrame, path: Path) -> Path:
    """CSV as a client writes it (missing values as the contract's "?"), or parquet in row groups of 700."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False, na_rep="?")
    else:
        frame.to_parquet(path, index=False, row_group_size=700)
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False,
                                                                               na_values=[""])


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("id_column", [None, "customer_id"])
def test_the_dask_engine_writes_what_the_single_engine_writes(client, scoring, rows, tmp_path, kind, id_column):
    frame = rows if id_column else rows.drop(columns="customer_id")
    source = write(frame, tmp_path / f"in.{kind}")
    blocksize = source.stat().st_size // 5 + 1
    assert len(plan_partitions(source, blocksize)) >= 4
    single = score_file(source, tmp_path / f"one.{kind}", tmp_path / f"one-bad.{kind}", scoring, id_column)
    spread = score_partitioned(source, tmp_path / f"many.{kind}", tmp_path / f"many-bad.{kind}", scoring, id_column,
                               client, blocksize)

    assert (spread.rows, spread.scored, spread.rejected) == (single.rows, single.scored, single.rejected) \
        == (ROWS, ROWS - len(FAULTS), len(FAULTS))
    assert spread.failures == single.failures
    answers, refusals = read(tmp_path / f"many.{kind}"), read(tmp_path / f"many-bad.{kind}")
    pd.testing.assert_frame_equal(answers, read(tmp_path / f"one.{kind}"), check_exact=True)
    pd.testing.assert_frame_equal(refusals, read(tmp_path / f"one-bad.{kind}"), check_exact=True)
    if kind == "csv":  # byte for byte
        assert (tmp_path / "many.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
        assert (tmp_path / "many-bad.csv").read_bytes() == (tmp_path / "one-bad.csv").read_bytes()
    # Numbers continue across partitions: the refused rows are the faulty positions, counted from 1.
    assert sorted(set(refusals["row"])) == [p + 1 for p in FAULTS]
    kept = [p for p in range(ROWS) if p not in FAULTS]
    if id_column:
        assert answers["customer_id"].tolist() == [f"C-{10_000 + p}" for p in kept]
    else:
        assert answers["row"].tolist() == [p + 1 for p in kept]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"in.{kind}", f"one.{kind}", f"one-bad.{kind}", f"many.{kind}", f"many-bad.{kind}"])  # no parts left


def test_a_gzip_input_is_cut_into_partitions_as_it_streams(client, scoring, rows, tmp_path, caplog):
    source = tmp_path / "in.csv.gz"
    rows.to_csv(source, index=False, na_rep="?", compression="gzip")
    blocksize = len(rows.to_csv(index=False, na_rep="?")) // 5 + 1   # decompressed bytes per partition
    (tmp_path / "pieces").mkdir()
    pieces = split_gzip(plan_partitions(source, blocksize)[0], blocksize, str(tmp_path / "pieces"))
    assert len(pieces) >= 5 and all(p.block.path == str(source) for p in pieces)
    spread_rows = pd.concat([f for p in pieces for f in read_partition_rows(p, scoring.contract)], ignore_index=True)
    pd.testing.assert_frame_equal(spread_rows, pd.concat(read_chunks(source, scoring.contract, 50_000),
                                                         ignore_index=True), check_exact=True)
    single = score_file(source, tmp_path / "one.csv", tmp_path / "one-bad.csv", scoring, "customer_id")
    with caplog.at_level("INFO", logger="mlops_template.ops.batch_distributed"):
        spread = score_partitioned(source, tmp_path / "many.csv", tmp_path / "many-bad.csv", scoring, "customer_id",
                                   client, blocksize)
    assert f"in {len(pieces)} partitions" in caplog.text   # the scorer cut it too
    assert (spread.rows, spread.rejected, spread.failures) == (single.rows, single.rejected, single.failures)
    assert (tmp_path / "many.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert (tmp_path / "many-bad.csv").read_bytes() == (tmp_path / "one-bad.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv.gz", "many-bad.csv", "many.csv", "one-bad.csv",
                                                          "one.csv", "pieces"]   # its pieces are gone


def test_a_gzip_input_that_is_not_gzip_is_refused_by_name(client, scoring, rows, tmp_path):
    source = tmp_path / "in.csv.gz"
    source.write_text(rows.to_csv(index=False, na_rep="?"), encoding="utf-8")   # plain text under a .gz name
    with pytest.raises(UserError, match=r"input .*in.csv.gz cannot be read as CSV: Not a gzipped file"):
        score_partitioned(source, tmp_path / "out.csv", tmp_path / "bad.csv", scoring, "customer_id", client,
                          10_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv.gz"]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_partitions_read_the_rows_the_single_engine_reads(scoring, rows, tmp_path, kind):
    source = write(rows, tmp_path / f"in.{kind}")
    partitions = plan_partitions(source, source.stat().st_size // 5 + 1)
    assert len(partitions) >= 4
    spread = pd.concat([f for p in partitions for f in read_partition_rows(p, scoring.contract)], ignore_index=True)
    single = pd.concat(read_chunks(source, scoring.contract, 50_000), ignore_index=True)
    pd.testing.assert_frame_equal(spread, single, check_exact=True)


def test_a_fault_in_a_later_partition_leaves_no_output(client, scoring, rows, tmp_path):
    source = write(rows, tmp_path / "in.csv")
    with open(source, "a", encoding="utf-8") as fh:
        fh.write("1,2,3," * 10 + "\n")  # more fields than the header: pandas cannot parse it
    (tmp_path / "out.csv").write_text("an earlier run's\n", encoding="utf-8")
    with pytest.raises(UserError, match="cannot be read as CSV"):
        score_partitioned(source, tmp_path / "out.csv", tmp_path / "bad.csv", scoring, "customer_id", client,
                          source.stat().st_size // 5 + 1)
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == "an earlier run's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_the_command_scores_with_the_dask_engine(scoring, package, rows, tmp_path):
    big = pd.concat([rows] * 4, ignore_index=True)  # about 1.3 MB: two partitions of --partition-mb 1
    source = write(big, tmp_path / "in.csv")
    assert len(plan_partitions(source, 2**20)) >= 2
    env = clean_env({"DASK_LOCAL_WORKERS": "2", "PYTHONPATH": str(REPO)}, drop=("DASK_SCHEDULER",))
    done = subprocess.run([sys.executable, "-m", "mlops_template", "score", str(source), "--output",
                           str(tmp_path / "out.parquet"), "--id-column", "customer_id", "--engine", "dask",
                           "--partition-mb", "1", "--model", str(package)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == ExitCode.OK, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith(f"scored {4 * (ROWS - len(FAULTS))} of {4 * ROWS} rows, rejected {4 * len(FAULTS)} (")
    single = score_file(source, tmp_path / "one.parquet", tmp_path / "one.rejected.parquet", scoring, "customer_id")
    assert single.rows == 4 * ROWS
    pd.testing.assert_frame_equal(read(tmp_path / "out.parquet"), read(tmp_path / "one.parquet"), check_exact=True)
    spread_bad = read(tmp_path / "out.rejected.parquet")
    pd.testing.assert_frame_equal(spread_bad, read(tmp_path / "one.rejected.parquet"), check_exact=True)
    assert spread_bad["row"].max() == 3 * ROWS + max(FAULTS) + 1  # numbered across partitions
