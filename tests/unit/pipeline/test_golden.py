"""Unit tests for the golden set: frozen once with a manifest, checked on every load."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops_template.core.contract import contract_from_dict
from mlops_template.pipeline import golden

CONTRACT = contract_from_dict({
    "name": "toy", "target": {"column": "y", "positive": "yes"},
    "columns": {"x": {"type": "float", "role": "numeric"},
                "g": {"type": "str", "role": "categorical", "allowed": ["a", "b"]},
                "y": {"type": "str", "role": "target", "allowed": ["yes", "no"]}},
})


def rows(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n), "g": ["a", "b"] * (n // 2), "y": ["yes", "no", "no", "no", "no"] * (n // 5),
                         "derived": 1.0})


def test_freeze_keeps_contract_columns_and_load_checks_the_digest(tmp_path):
    manifest = golden.freeze(rows(), CONTRACT, 30, 7, "first deploy", "ana", "test.parquet", tmp_path)
    frame, loaded = golden.load(tmp_path)
    assert list(frame.columns) == ["x", "g", "y"] and len(frame) == 30 == manifest["rows"]
    assert loaded == manifest and manifest["frozen_by"] == "ana" and manifest["positive_share"] > 0
    # Someone rewrites the rows (as a batch or a hand would): refused, naming both digests.
    pd.concat([frame, frame.head(1)]).to_parquet(tmp_path / "golden.parquet", index=False)
    with pytest.raises(golden.GoldenSetError, match=manifest["sha256"]):
        golden.load(tmp_path)


def test_no_manifest_is_no_golden_set_and_a_missing_file_is_an_error(tmp_path):
    assert golden.load(tmp_path) is None
    golden.freeze(rows(), CONTRACT, 100, 7, "", "ana", "test.parquet", tmp_path)
    (tmp_path / "golden.parquet").unlink()
    with pytest.raises(golden.GoldenSetError, match="dvc pull"):
        golden.load(tmp_path)


def test_replacing_needs_the_flag_and_a_reason_and_keeps_the_old_manifest(tmp_path):
    first = golden.freeze(rows(), CONTRACT, 100, 7, "", "ana", "test.parquet", tmp_path)
    with pytest.raises(golden.GoldenSetError, match="--replace"):
        golden.freeze(rows(20), CONTRACT, 100, 7, "new rows", "bo", "other.parquet", tmp_path)
    with pytest.raises(golden.GoldenSetError, match="--reason"):
        golden.freeze(rows(20), CONTRACT, 100, 7, " ", "bo", "other.parquet", tmp_path, replace=True)
    second = golden.freeze(rows(20), CONTRACT, 100, 7, "new rows", "bo", "other.parquet", tmp_path, replace=True)
    assert second["rows"] == 20
    assert second["replaced"] == [{k: v for k, v in first.items() if k != "replaced"}]


def test_a_single_class_or_missing_columns_cannot_be_frozen(tmp_path):
    with pytest.raises(golden.GoldenSetError, match="single class"):
        golden.freeze(rows().assign(y="no"), CONTRACT, 100, 7, "", "ana", "t", tmp_path)
    with pytest.raises(golden.GoldenSetError, match=r"lacks contract columns \['g'\]"):
        golden.freeze(rows().drop(columns="g"), CONTRACT, 100, 7, "", "ana", "t", tmp_path)
