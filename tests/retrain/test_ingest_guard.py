"""The bad-batch guard's checks on small frames, and how batches move between folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_template.contract import contract_from_dict
from mlops_template.ingest import (
    Accepted,
    check_batch,
    duplicate_mask,
    ingest,
    invalid_share,
    positive_share,
    psi,
    row_keys,
    total_variation,
)
from mlops_template.validation import validate_frame

CONTRACT = contract_from_dict({
    "name": "toy",
    "unique_rows": True,
    "target": {"column": "label", "positive": "yes"},
    "columns": {
        "age": {"type": "int", "role": "numeric", "min": 0, "max": 120},
        "score": {"type": "float", "role": "numeric", "nullable": True},
        "colour": {"type": "str", "role": "categorical", "allowed": ["red", "green", "blue"]},
        "label": {"type": "str", "role": "target", "allowed": ["yes", "no"]},
    },
})
THRESHOLDS = {"min_rows": 100, "max_invalid_share": 0.05, "max_duplicate_share": 0.05,
              "max_label_shift": 0.1, "max_psi": 0.25, "max_tvd": 0.1, "max_drifted_columns": 0}


def raw_frame(n: int, seed: int, age_shift: int = 0, positive: float = 0.3) -> pd.DataFrame:
    """``n`` distinct rows as raw strings, the way read_raw_csv returns them."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": (rng.integers(20, 70, n) + age_shift).astype(str),
        "score": [f"{v:.6f}" for v in rng.normal(0, 1, n)],
        "colour": rng.choice(["red", "green", "blue"], n),
        "label": np.where(rng.random(n) < positive, "yes", "no"),
    })


@pytest.fixture(scope="module")
def accepted() -> Accepted:
    return Accepted.from_frame(validate_frame(raw_frame(2000, 0), CONTRACT).valid, CONTRACT)


def failed(report) -> list[str]:
    return [c.name for c in report.checks if not c.passed]


def test_positive_share_ignores_missing_labels():
    assert positive_share(pd.Series(["yes", "no", None, "no"]), "yes") == pytest.approx(1 / 3)
    assert np.isnan(positive_share(pd.Series([], dtype=str), "yes"))


def test_row_keys_match_raw_strings_with_typed_values():
    raw = pd.DataFrame({"age": ["39"], "score": ["1.50"], "colour": ["red"], "label": ["no"]})
    typed = pd.DataFrame({"age": [39], "score": [1.5], "colour": ["red"], "label": ["no"]})
    assert row_keys(raw, CONTRACT).tolist() == row_keys(typed, CONTRACT).tolist()


def test_duplicates_within_the_batch_and_against_accepted_data():
    keys = pd.Series([1, 2, 2, 3, 4], dtype="uint64")
    assert duplicate_mask(keys, np.array([4], dtype="uint64")).tolist() == [False, False, True, False, True]


def test_invalid_share_does_not_count_duplicates():
    rejected = pd.DataFrame({"failed_checks": ["row:duplicate", "age:in_range(0, 120)",
                                               "row:duplicate; age:dtype"]})
    assert invalid_share(rejected, 10) == pytest.approx(0.2)


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    reference = pd.Series(rng.normal(0, 1, 5000))
    assert psi(reference, pd.Series(rng.normal(0, 1, 2000))) < 0.05
    assert psi(reference, pd.Series(rng.normal(1.5, 1, 2000))) > 0.25


def test_psi_counts_a_surge_of_missing_values_and_handles_constant_columns():
    reference = pd.Series(np.arange(1000, dtype=float))
    assert psi(reference, pd.Series([np.nan] * 500 + list(range(500)), dtype=float)) > 0.25
    assert psi(pd.Series([0.0] * 100), pd.Series([0.0] * 50)) == pytest.approx(0.0)


def test_total_variation_distance():
    a = pd.Series(["red"] * 50 + ["blue"] * 50)
    assert total_variation(a, a.sample(frac=1, random_state=0)) == pytest.approx(0.0)
    assert total_variation(a, pd.Series(["green"] * 10)) == pytest.approx(1.0)
    assert total_variation(a, pd.Series(["red"] * 70 + ["blue"] * 30)) == pytest.approx(0.2)


def test_a_batch_like_the_accepted_data_passes(accepted):
    report, valid = check_batch("good", raw_frame(500, 1), accepted, CONTRACT, THRESHOLDS)
    assert report.accepted, report.reasons
    assert len(valid) == 500


def test_each_bad_batch_fails_exactly_its_check(accepted):
    good = raw_frame(500, 2)
    flipped = good.assign(label=np.where(good["label"] == "yes", "no", "yes"))
    duplicated = pd.concat([good.head(400), good.head(100)], ignore_index=True)
    out_of_range = good.assign(age=np.where(np.arange(500) < 100, "500", good["age"]))
    drifted = raw_frame(500, 3, age_shift=40)
    cases = {"label_shift": flipped, "duplicates": duplicated, "drift": drifted}
    for check, frame in cases.items():
        report, _ = check_batch(check, frame, accepted, CONTRACT, THRESHOLDS)
        assert failed(report) == [check], (check, report.reasons)
    lenient = {**THRESHOLDS, "max_label_shift": 1.0, "max_drifted_columns": 4}  # 50 rows are noisy
    report, _ = check_batch("rows", good.head(50), accepted, CONTRACT, lenient)
    assert failed(report) == ["rows"], report.reasons
    report, _ = check_batch("range", out_of_range, accepted, CONTRACT, THRESHOLDS)
    assert "invalid" in failed(report)
    assert report.reasons[0].startswith("invalid: share of rows failing the contract 20.00%")


def test_rows_already_accepted_count_as_duplicates(accepted):
    again = pd.concat([raw_frame(2000, 0).head(100), raw_frame(400, 4)], ignore_index=True)
    report, _ = check_batch("again", again, accepted, CONTRACT, THRESHOLDS)
    assert failed(report) == ["duplicates"]


def test_a_batch_with_wrong_columns_is_invalid_with_the_reason(accepted):
    frame = raw_frame(200, 5).drop(columns="score")
    report, valid = check_batch("cols", frame, accepted, CONTRACT, THRESHOLDS)
    assert failed(report) == ["invalid"] and "missing column(s) ['score']" in report.reasons[0]
    assert valid.empty


@pytest.fixture
def folders(tmp_path):
    raw, incoming, quarantine = tmp_path / "raw", tmp_path / "incoming", tmp_path / "quarantine"
    raw.mkdir()
    incoming.mkdir()
    raw_frame(2000, 0).to_csv(raw / "base.csv", index=False)
    return raw, incoming, quarantine


def test_ingest_moves_good_batches_to_raw_and_bad_ones_to_quarantine(folders):
    raw, incoming, quarantine = folders
    raw_frame(300, 6).to_csv(incoming / "b-good.csv.gz", index=False)
    raw_frame(300, 7, positive=0.9).to_csv(incoming / "a-labels.csv", index=False)
    (incoming / "notes.txt").write_text("not a batch")

    outcomes = ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)

    assert [(o.batch, o.status) for o in outcomes] == [("a-labels.csv", "quarantined"),
                                                       ("b-good.csv.gz", "accepted")]
    assert sorted(p.name for p in raw.iterdir()) == ["b-good.csv.gz", "base.csv"]
    assert sorted(p.name for p in incoming.iterdir()) == ["notes.txt"]
    report = json.loads((quarantine / "a-labels.csv.report.json").read_text())
    assert report["reasons"][0].startswith("label_shift: positive share")
    assert (quarantine / "a-labels.csv").exists()


def test_a_batch_accepted_earlier_in_the_run_is_part_of_the_reference(folders):
    raw, incoming, quarantine = folders
    batch = raw_frame(300, 8)
    batch.to_csv(incoming / "1.csv", index=False)
    batch.to_csv(incoming / "2.csv", index=False)  # the same rows again, under a new name
    outcomes = ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
    assert [o.status for o in outcomes] == ["accepted", "quarantined"]
    assert outcomes[1].reasons[0].startswith("duplicates:")


def test_an_existing_name_is_never_overwritten(folders):
    raw, incoming, quarantine = folders
    raw_frame(300, 9).to_csv(raw / "batch.csv", index=False)
    raw_frame(300, 10).to_csv(incoming / "batch.csv", index=False)
    before = (raw / "batch.csv").read_bytes()
    [outcome] = ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
    assert outcome.status == "quarantined" and outcome.reasons[0].startswith("name:")
    assert (raw / "batch.csv").read_bytes() == before


def test_a_batch_left_in_incoming_after_a_crash_is_only_cleaned_up(folders):
    raw, incoming, quarantine = folders
    raw_frame(300, 11).to_csv(raw / "batch.csv", index=False)
    (incoming / "batch.csv").write_bytes((raw / "batch.csv").read_bytes())
    [outcome] = ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
    assert outcome.status == "skipped"
    assert not (incoming / "batch.csv").exists() and not quarantine.exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_an_unreadable_file_is_quarantined(folders):
    raw, incoming, quarantine = folders
    (incoming / "broken.csv.gz").write_bytes(b"not gzip at all")
    [outcome] = ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
    assert outcome.status == "quarantined" and outcome.reasons[0].startswith("read:")
