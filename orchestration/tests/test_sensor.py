"""The incoming sensors' cursor logic, without Dagster: new, changed, settling and gone batches."""

from __future__ import annotations

from pathlib import Path

from mlops_orchestration.triggers import batch_files, new_batches


def test_new_changed_settling_and_gone_batches():
    seen = {"a.csv": [10, 1_000_000_000_000]}
    now = {"a.csv": [10, 1_000_000_000_000], "b.csv.gz": [5, 2_000_000_000_000], "c.csv": [7, 2_999_000_000_000]}
    ready, cursor = new_batches(seen, now, settle_s=10, clock=3000.0)
    assert ready == {"b.csv.gz": [5, 2_000_000_000_000]}  # c.csv was written 1 s ago: still settling
    assert cursor == {"a.csv": seen["a.csv"], "b.csv.gz": now["b.csv.gz"]}
    ready, cursor = new_batches(cursor, now, settle_s=10, clock=3010.0)
    assert ready == {"c.csv": now["c.csv"]}
    changed = {**now, "a.csv": [11, 3_000_000_000_000]}
    assert new_batches(cursor | ready, changed, settle_s=0, clock=4000.0)[0] == {"a.csv": [11, 3_000_000_000_000]}
    ready, cursor = new_batches({"a.csv": [10, 1]}, {}, settle_s=0, clock=1.0)
    assert (ready, cursor) == ({}, {})  # ingested: forgotten, so a later batch of that name counts again


def test_only_batch_files_count(tmp_path: Path):
    for name in ("x.csv", "y.csv.gz", "README.md", "z.parquet"):
        (tmp_path / name).write_text("h\n")
    (tmp_path / "sub.csv").mkdir()
    assert sorted(batch_files(tmp_path)) == ["x.csv", "y.csv.gz"]
    assert batch_files(tmp_path / "missing") == {}


def test_objects_need_no_settling_and_count_once():
    seen = {"a.csv": [10, '"e1"', "2026-12-04T04:00:00+00:00"]}
    now = {**seen, "b.csv.gz": [5, '"e2"', "2026-12-04T04:01:00+00:00"]}
    ready, cursor = new_batches(seen, now, settle_s=None, clock=0.0)
    assert (ready, cursor) == ({"b.csv.gz": now["b.csv.gz"]}, now)
    assert new_batches(cursor, now, settle_s=None, clock=0.0)[0] == {}
    rewritten = {**now, "a.csv": [10, '"e1"', "2026-12-04T05:00:00+00:00"]}  # same bytes uploaded again
    assert new_batches(cursor, rewritten, settle_s=None, clock=0.0)[0] == {"a.csv": rewritten["a.csv"]}
