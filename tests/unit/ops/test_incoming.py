"""``INCOMING_URL`` parsing and which object names count as batches (no store needed)."""

from __future__ import annotations

import pytest

from mlops_template.core.exitcodes import UserError
from mlops_template.core.objectstore import ObjectUrl
from mlops_template.ops.incoming import incoming_url, refusal


def test_the_setting_is_an_s3_prefix_below_the_bucket() -> None:
    assert incoming_url({}) is None
    assert incoming_url({"INCOMING_URL": " s3://team/incoming/ "}) == ObjectUrl("team", "incoming")
    assert incoming_url({}, given="s3://team/a/b") == ObjectUrl("team", "a/b")
    for wrong in ("s3://team", "s3://team/", "/srv/incoming", "https://team/incoming", "s3:///incoming"):
        with pytest.raises(UserError, match="INCOMING_URL"):
            incoming_url({"INCOMING_URL": wrong})


@pytest.mark.parametrize("name", ["2026-12-04-crm.csv", "a.csv.gz", "A_b-c.1.csv", "9.csv"])
def test_plain_batch_names_pass(name: str) -> None:
    assert refusal(name, 10, 100) is None


@pytest.mark.parametrize("name", ["../a.csv", "..", "a/b.csv", "/a.csv", ".a.csv", "-a.csv", "a b.csv", "a.csv.exe",
                                  "a.CSV", "a.parquet", "a\\b.csv", "a.csv\n", "\u00e9.csv", "x" * 200 + ".csv", ""])
def test_other_names_are_refused(name: str) -> None:
    assert refusal(name, 10, 100)


def test_a_large_object_is_refused_by_size() -> None:
    assert "max_batch_bytes" in (refusal("a.csv", 101, 100) or "")
    assert refusal("a.csv", 100, 100) is None
