"""The bad-batch guard's checks on small frames, and how batches move between folders."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.contract import contract_from_dict
from mlops_template.ops.guard import Accepted, check_batch
from mlops_template.ops.guard.marginal import (
    duplicate_mask,
    invalid_share,
    positive_share,
    psi,
    psi_bins,
    row_keys,
    total_variation,
)
from mlops_template.ops.ingest import ingest
from mlops_template.pipeline.validation import DataValidationError, validate_frame

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


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run in a scratch folder: ``ingest`` writes reports to ``metrics/ingest`` by default."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def accepted() -> Accepted:
    return Accepted.from_frame(validate_frame(raw_frame(2000, 0), CONTRACT).valid, CONTRACT)


JOINT = ["label_by_group", "trigger", "label_flips", "near_duplicates",
         "cumulative_label_by_group", "cumulative_label_given_inputs", "cumulative_trigger", "cumulative_drift"]


def failed(report) -> list[str]:
    return [c.name for c in report.checks if not c.passed]


def check(report, name: str):
    return next(c for c in report.checks if c.name == name)


def batch_reports(folder) -> list[str]:
    """Reports of batches in ``folder`` (the reference window's record lives there too)."""
    return sorted(p.name for p in folder.glob("*.report.json"))


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


def decile_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI over plain deciles of the reference, as the guard computed it before point masses."""
    ref = reference.to_numpy(dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
        return np.clip(counts / values.size, 1e-4, None)

    p, q = shares(ref), shares(current.to_numpy(dtype=float))
    return float(np.sum((q - p) * np.log(q / p)))


def zero_inflated(n: int, non_zero: float, seed: int) -> pd.Series:
    """Like Adult's capital_gain: zeros, and a ``non_zero`` share of skewed positive amounts."""
    rng = np.random.default_rng(seed)
    amounts = np.round(rng.lognormal(8, 1, n))
    return pd.Series(np.where(rng.random(n) < non_zero, amounts, 0.0))


def test_a_point_mass_gets_its_own_bin_and_the_rest_are_quantile_bins():
    points, edges = psi_bins(zero_inflated(5000, 0.08, 0).to_numpy())
    assert points.tolist() == [0.0] and edges.size == 8  # 1 + 9 bins, plus the missing bin
    assert psi_bins(np.arange(1000.0))[0].size == 0  # continuous: no point mass, deciles


@pytest.mark.parametrize("non_zero", [0.3, 0.6, 1.0])
def test_psi_sees_the_non_zero_share_of_a_zero_inflated_column_move(non_zero):
    reference = zero_inflated(5000, 0.08, 0)
    assert decile_psi(reference, zero_inflated(2000, non_zero, 1)) == pytest.approx(0.0)  # deciles go blind
    assert psi(reference, zero_inflated(2000, non_zero, 1)) > 0.25


def test_psi_of_an_unchanged_zero_inflated_column_stays_small():
    reference = zero_inflated(5000, 0.08, 0)
    for seed in (1, 2, 3):
        assert psi(reference, zero_inflated(2000, 0.08, seed)) < 0.05


def test_psi_of_a_discrete_column_with_few_codes():
    rng = np.random.default_rng(2)
    codes = [1, 2, 3, 4, 5]
    reference = pd.Series(rng.choice(codes, 5000, p=[0.45, 0.25, 0.15, 0.12, 0.03]))
    assert psi(reference, pd.Series(rng.choice(codes, 2000, p=[0.45, 0.25, 0.15, 0.12, 0.03]))) < 0.05
    assert psi(reference, pd.Series(rng.choice(codes, 2000, p=[0.25, 0.25, 0.15, 0.12, 0.23]))) > 0.25
    assert psi(reference, pd.Series(rng.choice(codes, 2000, p=[0.2, 0.25, 0.4, 0.12, 0.03]))) > 0.25
    assert psi(reference, pd.Series(rng.choice([1, 2, 6], 2000, p=[0.5, 0.3, 0.2]))) > 0.25  # a new code


def test_psi_of_a_continuous_column_is_the_plain_decile_psi():
    rng = np.random.default_rng(3)
    reference = pd.Series(rng.normal(0, 1, 5000))
    for current in (rng.normal(0, 1, 2000), rng.normal(0.5, 1, 2000), rng.exponential(1, 2000)):
        assert psi(reference, pd.Series(current)) == pytest.approx(decile_psi(reference, pd.Series(current)))


def test_psi_of_a_constant_column():
    constant = pd.Series([7.0] * 1000)
    assert psi(constant, pd.Series([7.0] * 300)) == pytest.approx(0.0)
    assert psi(constant, pd.Series([7.0] * 200 + [3.0] * 100)) > 0.25
    assert psi(constant, pd.Series([7.0] * 200 + [np.nan] * 100)) > 0.25


def test_total_variation_distance():
    a = pd.Series(["red"] * 50 + ["blue"] * 50)
    assert total_variation(a, a.sample(frac=1, random_state=0)) == pytest.approx(0.0)
    assert total_variation(a, pd.Series(["green"] * 10)) == pytest.approx(1.0)
    assert total_variation(a, pd.Series(["red"] * 70 + ["blue"] * 30)) == pytest.approx(0.2)


def test_a_batch_like_the_accepted_data_passes(accepted):
    report, valid = check_batch("good", raw_frame(500, 1), accepted, CONTRACT, THRESHOLDS)
    assert report.accepted, report.reasons
    assert report.warnings == []
    assert len(valid) == 500


def test_each_bad_batch_fails_exactly_its_check(accepted):
    good = raw_frame(500, 2)
    flipped = good.assign(label=np.where(good["label"] == "yes", "no", "yes"))
    duplicated = pd.concat([good.head(400), good.head(100)], ignore_index=True)
    out_of_range = good.assign(age=np.where(np.arange(500) < 100, "500", good["age"]))
    drifted = raw_frame(500, 3, age_shift=40)
    # Flipping every label also moves the label share within every group.
    cases = {"label_shift": (flipped, ["label_shift", "label_by_group"]),
             "duplicates": (duplicated, ["duplicates"]), "drift": (drifted, ["drift"])}
    for check, (frame, expected) in cases.items():
        report, _ = check_batch(check, frame, accepted, CONTRACT, THRESHOLDS)
        assert failed(report) == expected, (check, report.reasons)
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


def with_positive_share(frame: pd.DataFrame, share: float) -> pd.DataFrame:
    positives = round(share * len(frame))
    return frame.assign(label=["yes"] * positives + ["no"] * (len(frame) - positives))


def test_a_passing_check_near_its_limit_is_a_warning(accepted):
    base = positive_share(accepted.frame["label"], "yes")
    near = with_positive_share(raw_frame(500, 12), base + 0.09)  # limit 0.1: 90% of it
    report, _ = check_batch("near", near, accepted, CONTRACT, THRESHOLDS)
    assert report.accepted, report.reasons
    assert [w.split(":")[0] for w in report.warnings] == ["label_shift"]
    assert "near the limit 0.1" in report.warnings[0] and report.to_dict()["warnings"] == report.warnings
    far = with_positive_share(raw_frame(500, 12), base + 0.05)  # 50% of the limit: no warning
    assert check_batch("far", far, accepted, CONTRACT, THRESHOLDS)[0].warnings == []


def test_few_rows_and_a_near_limit_invalid_share_are_warnings(accepted):
    lenient = {**THRESHOLDS, "max_label_shift": 1.0, "max_drifted_columns": 4,
               "max_psi": 10.0, "max_tvd": 1.0}
    report, _ = check_batch("small", raw_frame(110, 13), accepted, CONTRACT, lenient)  # 110 < 1.25 x 100
    assert report.accepted and report.warnings == ["rows: 110 rows, near the minimum 100 (fewer than 125)"]
    assert check_batch("enough", raw_frame(125, 13), accepted, CONTRACT, lenient)[0].warnings == []
    frame = raw_frame(500, 14)
    frame.loc[:21, "age"] = "500"  # 22 of 500 rows (4.4%) out of range, limit 5%
    report, _ = check_batch("invalid", frame, accepted, CONTRACT, lenient)
    assert report.accepted and [w.split(":")[0] for w in report.warnings] == ["invalid"]


def test_drifted_columns_of_an_accepted_batch_are_warnings(accepted):
    allowed = {**THRESHOLDS, "max_drifted_columns": 1}
    report, _ = check_batch("drifted", raw_frame(500, 3, age_shift=40), accepted, CONTRACT, allowed)
    assert report.accepted, report.reasons
    [warning] = report.warnings
    assert warning.startswith("drift: 1 drifted column(s) (age psi ") and "within the limit of 1" in warning


def test_a_column_near_its_drift_limit_is_a_warning(accepted):
    tight = {**THRESHOLDS, "max_psi": 10.0, "max_tvd": 1.0}
    report, _ = check_batch("psi", raw_frame(500, 15, age_shift=40), accepted, CONTRACT, tight)
    age_psi = check(report, "drift").details["columns"]["age"]["value"]
    near = {**tight, "max_psi": age_psi / 0.9}
    report, _ = check_batch("psi", raw_frame(500, 15, age_shift=40), accepted, CONTRACT, near)
    assert report.accepted
    assert [w.split(" is ")[0] for w in report.warnings] == [f"drift: age psi {age_psi:.3f}"]


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
    reports = raw.parent / "metrics/ingest"  # the default (cwd is tmp_path): accepted batches only
    assert batch_reports(reports) == ["b-good.csv.gz.report.json"]


def test_every_accepted_batch_gets_a_report_in_ingest_reports(folders, caplog):
    raw, incoming, quarantine = folders
    reports = raw.parent / "audit" / "ingest"
    base = positive_share(pd.read_csv(raw / "base.csv")["label"], "yes")
    with_positive_share(raw_frame(300, 16), base + 0.09).to_csv(incoming / "1-near.csv", index=False)
    raw_frame(300, 17).to_csv(incoming / "2-good.csv", index=False)
    raw_frame(300, 18, positive=0.9).to_csv(incoming / "3-bad.csv", index=False)

    with caplog.at_level(logging.WARNING, logger="mlops_template.ingest"):
        outcomes = ingest(incoming, raw, quarantine, CONTRACT, {**THRESHOLDS, "reports": str(reports)})

    assert [o.status for o in outcomes] == ["accepted", "accepted", "quarantined"]
    assert batch_reports(reports) == ["1-near.csv.report.json", "2-good.csv.report.json"]
    near = json.loads((reports / "1-near.csv.report.json").read_text())
    assert near["accepted"] and near["reasons"] == [] and near["rows"] == 300
    assert [w.split(":")[0] for w in near["warnings"]] == ["label_shift"]
    assert [c["name"] for c in near["checks"]] == ["rows", "invalid", "duplicates", "label_shift", "drift", *JOINT]
    assert json.loads((reports / "2-good.csv.report.json").read_text())["warnings"] == []
    assert (quarantine / "3-bad.csv.report.json").exists()  # the quarantine report stays beside its batch
    assert not (raw.parent / "metrics").exists()
    near_limit = [r for r in caplog.records if "near a limit" in r.getMessage()]
    assert [r.levelno for r in near_limit] == [logging.WARNING]
    assert near_limit[0].getMessage().startswith("1-near.csv: near a limit: label_shift:")


def test_reports_go_to_metrics_ingest_without_the_key_or_to_reports_dir(folders):
    raw, incoming, quarantine = folders
    raw_frame(300, 19).to_csv(incoming / "a.csv", index=False)
    ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)  # cwd is tmp_path (autouse fixture)
    assert json.loads((raw.parent / "metrics/ingest/a.csv.report.json").read_text())["accepted"]
    raw_frame(300, 20).to_csv(incoming / "b.csv", index=False)
    ingest(incoming, raw, quarantine, CONTRACT, {**THRESHOLDS, "reports": "ignored"},
           reports_dir=raw.parent / "x")
    assert batch_reports(raw.parent / "x") == ["b.csv.report.json"]


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


def without_git_identity(monkeypatch, user: str) -> None:
    """No git user.name anywhere (global and system config hidden): ``$USER`` names the person."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("USER", user)


def test_reports_record_provenance_and_the_checks_near_their_limit(folders, monkeypatch):
    raw, incoming, quarantine = folders
    without_git_identity(monkeypatch, "batch-author")
    base = positive_share(pd.read_csv(raw / "base.csv")["label"], "yes")
    with_positive_share(raw_frame(300, 21), base + 0.09).to_csv(incoming / "1-near.csv", index=False)
    poisoned = raw_frame(300, 22).assign(label=lambda f: np.where(f["colour"] == "red", "no", f["label"]))
    poisoned.to_csv(incoming / "2-poisoned.csv", index=False)
    digests = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in incoming.iterdir()}

    outcomes = ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS, command="python -m mlops_template.retrain")

    assert [o.status for o in outcomes] == ["accepted", "quarantined"]
    accepted = json.loads((raw.parent / "metrics/ingest/1-near.csv.report.json").read_text())
    rejected = json.loads((quarantine / "2-poisoned.csv.report.json").read_text())
    for report, name in ((accepted, "1-near.csv"), (rejected, "2-poisoned.csv")):
        origin = report["provenance"]
        assert (origin["file"], origin["sha256"], origin["bytes"]) == (name, *digests[name])
        assert origin["command"] == "python -m mlops_template.retrain" and origin["user"] == "batch-author"
        assert origin["ingested_at"].endswith("+00:00") and origin["source"] == str(incoming / name)
    assert accepted["near_limit"] == ["label_shift"]
    assert [r.split(":")[0] for r in rejected["reasons"]] == ["label_by_group"]
    assert "colour=red" in rejected["reasons"][0]


def test_the_person_is_git_user_name_when_there_is_one(folders, monkeypatch):
    raw, incoming, quarantine = folders
    without_git_identity(monkeypatch, "fallback")
    subprocess.run(["git", "init", "-q"], check=True)  # cwd is tmp_path
    subprocess.run(["git", "config", "user.name", "Ada Lovelace"], check=True)
    raw_frame(300, 23).to_csv(incoming / "a.csv", index=False)
    ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
    origin = json.loads((raw.parent / "metrics/ingest/a.csv.report.json").read_text())["provenance"]
    assert origin["user"] == "Ada Lovelace" and origin["command"].startswith("python ")


def test_the_reference_window_is_fixed_on_first_use_and_its_files_may_not_change(folders):
    raw, incoming, quarantine = folders
    raw_frame(300, 24).to_csv(incoming / "a.csv", index=False)
    ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
    record = json.loads((raw.parent / "metrics/ingest/reference-window.json").read_text())
    assert [f["name"] for f in record["files"]] == ["base.csv"] and record["contract"] == "toy"
    assert record["files"][0]["sha256"] == hashlib.sha256((raw / "base.csv").read_bytes()).hexdigest()

    raw_frame(300, 25).to_csv(incoming / "b.csv", index=False)
    ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)  # a.csv is accepted data, not window
    report = json.loads((raw.parent / "metrics/ingest/b.csv.report.json").read_text())
    cumulative = report["cumulative"]["cumulative_drift"]
    assert (cumulative["window"], cumulative["since_window"]) == (2000, 600)

    raw_frame(2000, 26).to_csv(raw / "base.csv", index=False)  # someone rewrote the window's data
    raw_frame(300, 27).to_csv(incoming / "c.csv", index=False)
    with pytest.raises(DataValidationError, match="base.csv of the reference window changed"):
        ingest(incoming, raw, quarantine, CONTRACT, THRESHOLDS)
