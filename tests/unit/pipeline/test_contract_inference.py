"""Contract inference: the drafted contract accepts its own source and the next batch like it.

Each case writes a small CSV with the dirt real exports carry (integral floats, empty cells, NA
markers, identifiers, dates, many categories) and reads it back exactly as the CLI and the
validate stage do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_template.core.contract import ContractError, contract_from_dict, load_contract
from mlops_template.pipeline.inference import infer_contract, read_csv_for_inference, write_contract
from mlops_template.pipeline.validation import describe_rejections, validate_file

ROWS = 240


def dirty_frame(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A frame of text cells shaped like a real export, months January to November only."""
    rng = np.random.default_rng(seed)
    amount = np.where(rng.random(rows) < 0.9, 0.0, rng.gamma(2.0, 500.0, rows).round(2))
    frame = pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in rng.permutation(rows)],
        "row_id": [str(i) for i in range(rows)],
        "visits": [f"{v}.0" for v in rng.integers(0, 40, rows)],          # integers written as floats
        "amount": [f"{a}" for a in amount],                                 # zero-inflated amounts
        "month": [str(m) for m in rng.integers(1, 12, rows)],               # 1..11, December unseen
        "plan": rng.choice(["basic", "plus", "pro"], rows).tolist(),
        "city": [f"city-{c}" for c in rng.integers(0, 120, rows)],          # many categories, repeated
        "signup": [f"2026-{m:02d}-{d:02d}"
                   for m, d in zip(rng.integers(1, 12, rows), rng.integers(1, 28, rows), strict=True)],
        "churned": rng.choice(["yes", "no"], rows).tolist(),
    })
    frame.loc[rng.random(rows) < 0.05, "visits"] = ""        # empty cells
    frame.loc[rng.random(rows) < 0.03, "plan"] = ""
    frame.loc[rng.random(rows) < 0.03, "amount"] = "NA"      # a marker among numbers
    return frame


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def draft_from(path: Path, **options):
    return infer_contract(read_csv_for_inference(path), target="churned", positive="yes", **options)


def test_drafted_contract_accepts_every_row_of_its_source(tmp_path):
    source = write(dirty_frame(), tmp_path / "export.csv")
    draft = draft_from(source)
    write_contract(draft.contract, tmp_path / "drafted.yaml", str(source))
    contract = load_contract(tmp_path / "drafted.yaml")

    result = validate_file(source, contract)
    assert result.rejected.empty, describe_rejections(result)
    assert len(result.valid) == ROWS
    assert result.valid["visits"].dtype == "Int64" and result.valid["visits"].isna().sum() > 0
    assert result.valid["amount"].isna().sum() > 0 and result.valid["plan"].isna().sum() > 0


def test_types_nulls_and_roles_are_read_from_the_values(tmp_path):
    draft = draft_from(write(dirty_frame(), tmp_path / "export.csv"))
    columns = draft.contract["columns"]
    assert columns["visits"]["type"] == "int" and columns["visits"]["nullable"] is True
    assert columns["amount"]["type"] == "float" and columns["amount"]["nullable"] is True
    assert columns["plan"] == {"type": "str", "role": "categorical", "allowed": ["basic", "plus", "pro"],
                               "nullable": True}
    assert "nullable" not in columns["month"]
    # Identifiers (text, and integers counting rows) and dates are not features.
    assert columns["customer_id"]["role"] == "ignore"
    assert columns["row_id"]["role"] == "ignore"
    assert columns["signup"]["role"] == "ignore"
    # More categories than max_categories: an open vocabulary, reported.
    assert columns["city"]["role"] == "categorical" and "allowed" not in columns["city"]
    assert "" in draft.contract["read"]["na_values"] and "NA" in draft.contract["read"]["na_values"]
    review = draft.review()
    for name in ("customer_id", "row_id", "signup", "city", "visits"):
        assert name in review
    assert any("city" in w and "open vocabulary" in w for w in draft.warnings)
    assert any("customer_id" in w for w in draft.warnings)


def test_bounds_are_open_by_default_so_next_month_is_accepted(tmp_path):
    source = write(dirty_frame(), tmp_path / "export.csv")
    draft = draft_from(source)
    assert "min" not in draft.contract["columns"]["month"] and "max" not in draft.contract["columns"]["month"]
    assert "1 to 11" in draft.contract["columns"]["month"]["description"]
    contract = contract_from_dict(draft.contract)
    december = dirty_frame(seed=1).assign(month="12")
    result = validate_file(write(december, tmp_path / "december.csv"), contract)
    assert result.rejected.empty, describe_rejections(result)


def test_widened_bounds_hold_the_observed_range_with_a_margin(tmp_path):
    draft = draft_from(write(dirty_frame(), tmp_path / "export.csv"), bounds="widened")
    month = draft.contract["columns"]["month"]
    assert month["min"] == 0 and month["max"] >= 16  # 1..11 widened by half the span, floored at 0
    assert draft.contract["columns"]["amount"]["min"] == 0


def test_open_categories_flag_and_max_categories(tmp_path):
    source = write(dirty_frame(), tmp_path / "export.csv")
    assert "allowed" not in draft_from(source, open_categories=True).contract["columns"]["plan"]
    many = draft_from(source, max_categories=200).contract["columns"]["city"]
    assert len(many["allowed"]) > 50


def test_target_must_be_binary_and_positive_matches_numbers(tmp_path):
    frame = dirty_frame()
    three = frame.assign(churned=np.resize(["a", "b", "c"], ROWS))
    with pytest.raises(ContractError, match="3 distinct values"):
        infer_contract(three, target="churned", positive="a")
    numeric = frame.assign(churned=np.resize(["0.0", "1.0"], ROWS))
    draft = infer_contract(numeric, target="churned", positive="1")
    assert draft.contract["target"] == {"column": "churned", "positive": "1.0"}
    with pytest.raises(ContractError, match="positive class"):
        infer_contract(frame, target="churned", positive="maybe")
    with pytest.raises(ContractError, match="not in"):
        infer_contract(frame, target="missing")


def test_a_real_decimal_in_an_int_column_is_still_rejected(tmp_path):
    source = write(dirty_frame(), tmp_path / "export.csv")
    contract = contract_from_dict(draft_from(source).contract)
    bad = dirty_frame(seed=2)
    bad.loc[5, "visits"] = "3.5"
    result = validate_file(write(bad, tmp_path / "bad.csv"), contract)
    assert result.rejected["source_row"].tolist() == [7]
    assert "visits" in result.rejected.loc[0, "failed_checks"]


def test_empty_cells_not_declared_missing_get_a_hint(tmp_path):
    source = write(dirty_frame(), tmp_path / "export.csv")
    raw = draft_from(source).contract
    raw["read"]["na_values"] = ["NA"]
    result = validate_file(source, contract_from_dict(raw))
    assert not result.rejected.empty
    assert "add '' to read.na_values" in describe_rejections(result)
